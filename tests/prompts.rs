//! Prompt playlists against the real service on loopback: the caller hears
//! the lead-in, prompt A, the configured gap and prompt B, byte for byte, and
//! the record names both prompts with their versions, hashes and how much of
//! each was sent.

mod support;

use std::time::Duration;

use courtline::contract::pb::EndReason;
use courtline::switchboard::media::codec::Codec;
use sha2::{Digest, Sha256};
use support::*;

const SEC: Duration = Duration::from_secs(1);

/// Lead-in of the test switchboard (`leading_silence_ms = 200`), in frames.
const LEAD_IN_FRAMES: usize = 10;

/// SHA-256 of a file, computed here rather than trusted from courtline.
fn file_sha256(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The next `count` RTP payloads of the caller's stream.
async fn payloads(caller: &Caller, count: usize, what: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (p, _) = recv_rtp(&caller.rtp, SEC)
            .await
            .unwrap_or_else(|| panic!("{what}: packet {i} missing"));
        assert_eq!(p.pt, 8, "{what}: PCMA, as agreed");
        out.push(p.payload);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_plays_prompt_a_then_the_gap_then_prompt_b_and_the_record_lists_both() {
    // An operator that never answers: the caller stays in ringback after the playlist.
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 1000,
        second_prompt_ms: Some(600),
        prompt_gap_ms: 400,
        rtp_ports: (36000, 36099),
        ..Options::default()
    })
    .await;
    let prompts = sb.playlist.prompts();
    assert_eq!(prompts.len(), 2);
    let (a, b) = (&prompts[0].frames, &prompts[1].frames);
    assert_eq!((a.frame_count(), b.frame_count()), (50, 30));
    let mut caller = Caller::new(sb.sip).await;
    caller.call("8 0 101").await;

    let silence = Codec::Pcma.silence_frame().to_vec();
    for (i, frame) in payloads(&caller, LEAD_IN_FRAMES, "lead-in")
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(frame, &silence, "lead-in frame {i}");
    }
    for (i, frame) in payloads(&caller, 50, "prompt A").await.iter().enumerate() {
        assert_eq!(frame, a.frame(Codec::Pcma, i), "prompt A frame {i}");
    }
    for (i, frame) in payloads(&caller, 20, "gap").await.iter().enumerate() {
        assert_eq!(frame, &silence, "gap frame {i}: 400 ms of silence");
    }
    for (i, frame) in payloads(&caller, 30, "prompt B").await.iter().enumerate() {
        assert_eq!(frame, b.frame(Codec::Pcma, i), "prompt B frame {i}");
    }
    // The two prompts really differ, so the order above is proven.
    assert_ne!(a.frame(Codec::Pcma, 0), b.frame(Codec::Pcma, 0));
    // Ringback follows once the whole playlist is out; hang up then.
    payloads(&caller, 1, "ringback").await;
    operator.expect_request("INVITE", 2 * SEC).await;

    caller.hang_up().await;
    let record = sb.record(&caller.call_id).await;
    assert!(record.prompt_completed);
    assert_eq!(record.prompt_length_ms, 200 + 1000 + 400 + 600);
    assert_eq!(record.prompt_ms_sent, record.prompt_length_ms);
    assert_eq!(record.prompt_id, "test");
    let listed: Vec<(&str, &str, u32, u32)> = record
        .prompts
        .iter()
        .map(|p| (p.id.as_str(), p.version.as_str(), p.length_ms, p.ms_sent))
        .collect();
    assert_eq!(
        listed,
        [("test", "1", 1000, 1000), ("second", "2", 600, 600)]
    );
    assert_eq!(
        record.prompts[0].sha256,
        file_sha256(&sb.dir.path().join("prompt.wav"))
    );
    assert_eq!(
        record.prompts[1].sha256,
        file_sha256(&sb.dir.path().join("second.wav"))
    );
    assert_eq!(record.prompt_sha256, record.prompts[0].sha256);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_in_the_second_prompt_records_how_much_of_each_was_sent() {
    let sb = TestSwitchboard::start(Options {
        prompt_ms: 400,
        second_prompt_ms: Some(2000),
        prompt_gap_ms: 200,
        rtp_ports: (36100, 36199),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("8 101").await;
    // Lead-in, A, gap, and the first 300 ms of B.
    let heard = LEAD_IN_FRAMES + 20 + 10 + 15;
    let received = payloads(&caller, heard, "playlist").await;
    let b = &sb.playlist.prompts()[1].frames;
    assert_eq!(received[heard - 1], b.frame(Codec::Pcma, 14));
    caller.hang_up().await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(
        EndReason::try_from(record.end_reason),
        Ok(EndReason::CallerHungUpDuringPrompt)
    );
    assert!(!record.prompt_completed);
    assert_eq!(record.prompts.len(), 2);
    assert_eq!(record.prompts[0].ms_sent, 400, "A was heard in full");
    let b_sent = record.prompts[1].ms_sent;
    // Packets still in flight when the BYE arrived count as sent.
    assert!(
        (300..=600).contains(&b_sent),
        "B: {b_sent} ms sent, 300 ms received"
    );
    assert_eq!(record.prompts[1].length_ms, 2000);
    assert_eq!(
        record.prompt_ms_sent,
        200 + 400 + 200 + b_sent,
        "the playlist total agrees with the parts"
    );
    sb.stop().await;
}
