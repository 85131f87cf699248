//! Several media engine threads (`[media] threads = 2`) in a real
//! `courtline serve`: calls land on both shards (the admin endpoint's
//! `courtline_media_shard_calls`), and every call, whichever shard carries
//! it, plays its whole warning and relays both ways once bridged.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use courtline::cli::serve::load_live;
use courtline::config::Config;
use courtline::switchboard::media::codec::Codec;
use support::serve_child::{metric_value, one_line_config, prompt_file, ServeChild};
use support::{recv_rtp, rtp_packet, sdp, write_test_prompt, Caller, Sip, SipPeer};
use tokio::net::UdpSocket;
use tokio::time::{sleep, Instant};

/// Calls up at once: two on each shard.
const CALLS: usize = 4;
/// Generous bound for anything the test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// Waits until `/metrics` shows `calls` on each of the two shards.
async fn expect_shard_calls(serve: &ServeChild, calls: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = serve.metrics().await;
        let shards = [0, 1].map(|shard| {
            metric_value(
                &metrics,
                &format!("courtline_media_shard_calls{{shard=\"{shard}\"}}"),
            )
            .map(str::to_string)
        });
        if shards.iter().all(|n| n.as_deref() == Some(calls)) {
            assert!(
                !metrics.contains("courtline_media_shard_calls{shard=\"2\"}"),
                "two threads configured, a third shard shown:\n{metrics}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards hold {shards:?} calls, not {calls} each:\n{metrics}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `socket` until a packet whose payload is all `byte` arrives (earlier
/// ones, such as ringback, are skipped); false after [`WAIT`].
async fn hears(socket: &UdpSocket, byte: u8) -> bool {
    let deadline = Instant::now() + WAIT;
    while let Some((rtp, _)) =
        recv_rtp(socket, deadline.saturating_duration_since(Instant::now())).await
    {
        if !rtp.payload.is_empty() && rtp.payload.iter().all(|&b| b == byte) {
            return true;
        }
    }
    false
}

/// Sends a few A-law packets of `byte` from `socket` to `to`, 20 ms apart.
async fn talk(socket: &UdpSocket, to: std::net::SocketAddr, ssrc: u32, byte: u8) {
    for seq in 0..10u16 {
        let packet = rtp_packet(8, seq, 160 * u32::from(seq), ssrc, seq == 0, &[byte; 160]);
        socket.send_to(&packet, to).await.unwrap();
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_both_shards_hear_the_whole_warning_and_are_bridged() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("warning.wav");
    write_test_prompt(&wav, 1000);
    let operator = SipPeer::bind().await;
    let text = one_line_config(
        dir.path(),
        "47100-47199",
        "",
        "warning",
        &prompt_file(&wav),
        "",
    )
    .replace("[media]\n", "[media]\nthreads = 2\n")
    .replace(
        "sip:nobody@127.0.0.1:9",
        &format!("sip:operator@{}", operator.addr),
    );
    let config = dir.path().join("courtline.toml");
    std::fs::write(&config, &text).unwrap();
    // What the line plays, loaded as courtline loads it.
    let playlist = load_live(Config::load(&config).unwrap())
        .unwrap()
        .playlists
        .at(chrono::Utc::now())
        .in_hours["02112368"]
        .clone();
    let serve = ServeChild::start(dir, config).await;

    // Four callers in the warning at once: round-robin puts two on each shard.
    // Each is kept with where courtline takes its RTP (its 200 OK's SDP).
    let mut callers = Vec::new();
    for _ in 0..CALLS {
        let mut caller = Caller::new(serve.sip).await;
        let ok = caller.call("8").await;
        callers.push((caller, ok.sdp_rtp_addr()));
    }
    expect_shard_calls(&serve, "2").await;

    // Each caller's warning: every frame, byte-exact, numbered without a gap.
    for (i, (caller, _)) in callers.iter().enumerate() {
        let mut previous: Option<u16> = None;
        for frame in 0..playlist.frame_count() {
            let (rtp, _) = recv_rtp(&caller.rtp, WAIT)
                .await
                .unwrap_or_else(|| panic!("caller {i}: warning frame {frame} missing"));
            assert_eq!(
                rtp.payload,
                playlist.frame(Codec::Pcma, frame),
                "caller {i}: warning frame {frame} differs"
            );
            if let Some(previous) = previous {
                assert_eq!(
                    rtp.seq,
                    previous.wrapping_add(1),
                    "caller {i}: frame {frame}"
                );
            }
            previous = Some(rtp.seq);
        }
    }

    // The operator is dialled once per call as its warning ends; answer each
    // (retransmitted INVITEs are the same call) on an RTP socket of its own.
    let mut invites: HashMap<String, Sip> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while invites.len() < CALLS {
        let message = operator
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| panic!("{} operator INVITEs of {CALLS}", invites.len()));
        if message.method() == "INVITE" {
            let call_id = message.header("call-id").unwrap().to_string();
            invites.entry(call_id).or_insert(message);
        }
    }
    let mut legs = Vec::new();
    for (k, invite) in invites.values().enumerate() {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let headers = format!(
            "Contact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
            operator.addr
        );
        let answer = sdp(rtp.local_addr().unwrap(), "8");
        operator
            .respond(invite, "200 OK", Some(&format!("op{k}")), &headers, &answer)
            .await;
        legs.push((rtp, invite.sdp_rtp_addr()));
    }

    // Bridged: each operator's audio reaches exactly one caller, and that
    // caller's audio reaches that operator, whichever shard the call is on.
    let mut bridged_callers = Vec::new();
    for (k, (op_rtp, courtline_op)) in legs.iter().enumerate() {
        let from_operator = 0x10 + k as u8;
        talk(op_rtp, *courtline_op, 0x0bad_0000 + k as u32, from_operator).await;
        let mut heard_by = None;
        for (i, (caller, _)) in callers.iter().enumerate() {
            if bridged_callers.contains(&i) {
                continue;
            }
            // Only the caller of this operator's call gets the bytes; the
            // others' sockets hold ringback, read and dropped up to their end.
            let got = tokio::time::timeout(
                Duration::from_millis(500),
                hears(&caller.rtp, from_operator),
            )
            .await
            .unwrap_or(false);
            if got {
                heard_by = Some(i);
                break;
            }
        }
        let i = heard_by.unwrap_or_else(|| panic!("no caller heard operator {k}"));
        bridged_callers.push(i);
        let (caller, courtline_caller) = &callers[i];
        let from_caller = 0x50 + k as u8;
        talk(
            &caller.rtp,
            *courtline_caller,
            0x0c00_0000 + i as u32,
            from_caller,
        )
        .await;
        assert!(
            hears(op_rtp, from_caller).await,
            "operator {k} did not hear its caller {i}"
        );
    }
    assert_eq!(bridged_callers.len(), CALLS);

    // Hanging up takes each call off the shard that held it.
    for (caller, _) in &mut callers {
        caller.request("BYE").await;
    }
    let mut byes = 0;
    let deadline = Instant::now() + WAIT;
    while byes < CALLS {
        let message = operator
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| panic!("{byes} BYEs to the operator of {CALLS}"));
        if message.method() == "BYE" {
            operator.respond(&message, "200 OK", None, "", "").await;
            byes += 1;
        }
    }
    expect_shard_calls(&serve, "0").await;
}
