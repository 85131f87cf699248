//! Hostile and unwanted traffic against the real service: floods, scanners,
//! untrusted sources, and dead operators skipped by the hunt list.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const SEC: Duration = Duration::from_secs(1);

fn options(
    to: std::net::SocketAddr,
    me: std::net::SocketAddr,
    call_id: &str,
    user_agent: &str,
) -> String {
    options_over("UDP", to, me, call_id, user_agent)
}

fn options_over(
    transport: &str,
    to: std::net::SocketAddr,
    me: std::net::SocketAddr,
    call_id: &str,
    user_agent: &str,
) -> String {
    format!(
        "OPTIONS sip:02112368@{to} SIP/2.0\r\nVia: SIP/2.0/{transport} {me};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p\r\nTo: <sip:02112368@{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_does_not_stop_another_callers_call() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (31700, 31799),
        // 1 token/s refill: the flood is judged on its burst alone, however
        // slowly a loaded machine lets this test send it.
        sip_extra: "[sip.shield]\nrate_per_s = 1.0\nburst = 20\nban_s = 60\n".into(),
        ..Options::default()
    })
    .await;
    let flooder = SipPeer::bind_on("127.0.0.3").await;
    for i in 0..300 {
        flooder
            .send(
                sb.sip,
                &options(sb.sip, flooder.addr, &format!("flood{i}"), "flooder"),
            )
            .await;
    }
    // The caller's call goes through while the flooder is banned.
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = operator.expect_request("INVITE", 3 * SEC).await;
    operator
        .respond(&invite, "486 Busy Here", Some("op"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 3 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let mut answered = 0;
    while flooder.recv(Duration::from_millis(300)).await.is_some() {
        answered += 1;
    }
    assert!(
        (1..=21).contains(&answered),
        "the flood was cut off after its burst: {answered} answers"
    );
    // Still banned: a polite request from the same source is ignored.
    flooder
        .send(sb.sip, &options(sb.sip, flooder.addr, "after", "flooder"))
        .await;
    assert!(flooder.recv(Duration::from_millis(500)).await.is_none());
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanners_are_ignored_from_their_first_packet() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (31800, 31899),
        ..Options::default()
    })
    .await;
    let scanner = SipPeer::bind_on("127.0.0.4").await;
    scanner
        .send(
            sb.sip,
            &options(sb.sip, scanner.addr, "scan1", "friendly-scanner"),
        )
        .await;
    assert!(scanner.recv(Duration::from_millis(500)).await.is_none());
    scanner
        .send(sb.sip, &options(sb.sip, scanner.addr, "scan2", "Zoiper"))
        .await;
    assert!(
        scanner.recv(Duration::from_millis(500)).await.is_none(),
        "banned source stays ignored"
    );
    let honest = SipPeer::bind().await;
    honest
        .send(sb.sip, &options(sb.sip, honest.addr, "ok", "Zoiper"))
        .await;
    honest.expect_status(200, 2 * SEC).await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sources_get_403_or_silence() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (31900, 31999),
        sip_extra: "[sip.shield]\ntrusted = [\"127.0.0.2/32\"]\nuntrusted = \"reject\"\n".into(),
        ..Options::default()
    })
    .await;
    let stranger = SipPeer::bind().await; // 127.0.0.1: not trusted
    stranger
        .send(sb.sip, &options(sb.sip, stranger.addr, "s1", "x"))
        .await;
    stranger.expect_status(403, 2 * SEC).await;
    let trunk = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let trunk_addr = trunk.local_addr().unwrap();
    trunk
        .send_to(options(sb.sip, trunk_addr, "t1", "x").as_bytes(), sb.sip)
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(2 * SEC, trunk.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    sb.stop().await;

    let sb = TestSwitchboard::start(Options {
        rtp_ports: (31900, 31999),
        sip_extra: "[sip.shield]\ntrusted = [\"127.0.0.2/32\"]\nuntrusted = \"drop\"\n".into(),
        ..Options::default()
    })
    .await;
    stranger
        .send(sb.sip, &options(sb.sip, stranger.addr, "s2", "x"))
        .await;
    assert!(stranger.recv(Duration::from_millis(500)).await.is_none());
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_stops_answering_options_is_skipped() {
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let alive = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![
            format!("sip:desk1@{dead_addr}"),
            format!("sip:desk2@{}", alive.addr),
        ],
        prompt_ms: 200,
        t1_ms: 50,
        rtp_ports: (32000, 32099),
        sip_extra: "qualify_interval_s = 1\n".into(),
        ..Options::default()
    })
    .await;
    // desk2 answers its probes; desk1 swallows them. After two unanswered probes
    // (64·T1 = 3.2 s each) desk1 is down.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(5500);
    while tokio::time::Instant::now() < deadline {
        if let Some(probe) = alive.recv(Duration::from_millis(100)).await {
            assert_eq!(probe.method(), "OPTIONS");
            alive.respond(&probe, "200 OK", Some("q"), "", "").await;
        }
    }
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = loop {
        let msg = alive
            .recv(3 * SEC)
            .await
            .expect("INVITE goes straight to desk2");
        if msg.method() == "INVITE" {
            break msg;
        }
        alive.respond(&msg, "200 OK", Some("q"), "", "").await;
    };
    alive
        .respond(&invite, "486 Busy Here", Some("b"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 3 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    let mut buf = [0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(50), dead.recv_from(&mut buf)).await
    {
        assert!(
            buf[..n].starts_with(b"OPTIONS "),
            "desk1 got only probes, no INVITE:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.operator_uri, format!("sip:desk2@{}", alive.addr));
    sb.stop().await;
}

/// A TCP connection to `to` from the loopback address `ip`.
async fn tcp_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether courtline closed the connection (end of stream, or a reset) within `wait`.
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shield_guards_tcp_and_tls_too() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32450, 32499),
        // 1 token/s refill, as above: the 26 connections must outrun a burst
        // of 20 even when connecting them takes this test a second.
        sip_extra: format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n[sip.shield]\nrate_per_s = 1.0\nburst = 20\nban_s = 60\n",
            cert.display(),
            key.display()
        ),
        ..Options::default()
    })
    .await;
    let tls = sb.tls.unwrap();

    // A flood over TCP: cut off after its burst, the connection closed, and
    // the banned source's next connection closed at accept.
    let stream = tcp_from("127.0.0.3", sb.sip).await;
    let me = stream.local_addr().unwrap();
    let mut flooder = StreamPeer::new(stream, sb.sip);
    let flood: String = (0..100)
        .map(|i| options_over("TCP", sb.sip, me, &format!("f{i}"), "flooder"))
        .collect();
    flooder.send(&flood).await;
    let mut answered = 0;
    while flooder.recv(SEC).await.is_some() {
        answered += 1;
    }
    // (Answers still queued when the ban closes the connection are lost with it.)
    assert!(answered <= 20, "{answered} answers to the flood");
    assert!(
        closed(&mut flooder.stream, 2 * SEC).await,
        "flooder's connection closed"
    );
    let mut again = tcp_from("127.0.0.3", sb.sip).await;
    assert!(
        closed(&mut again, 2 * SEC).await,
        "banned source refused at accept"
    );

    // A scanner over TLS: banned at its first message; its next TLS
    // connection is closed before the handshake.
    let tcp = tcp_from("127.0.0.4", tls).await;
    let me = tcp.local_addr().unwrap();
    let mut scanner = StreamPeer::new(tls_handshake(tcp, der.clone()).await.unwrap(), tls);
    scanner
        .send(&options_over("TLS", tls, me, "scan", "friendly-scanner"))
        .await;
    assert!(
        closed(&mut scanner.stream, 2 * SEC).await,
        "scanner's connection closed"
    );
    let tcp = tcp_from("127.0.0.4", tls).await;
    assert!(
        tls_handshake(tcp, der.clone()).await.is_err(),
        "banned source refused at accept"
    );

    // A flood of connections (no messages) from 127.0.0.6: cut off after the
    // burst, and the source banned. Which connections are cut off depends on
    // the order courtline gets to them (its accept loop may run ahead of the
    // shield), so what is checked is how many.
    let mut connections = Vec::new();
    for _ in 0..26 {
        connections.push(tcp_from("127.0.0.6", sb.sip).await);
    }
    let verdicts =
        futures::future::join_all(connections.iter_mut().map(|c| closed(c, 2 * SEC))).await;
    let open = verdicts.iter().filter(|&&cut| !cut).count();
    // 20 is the burst; the 1 token/s refill may let one or two more in.
    assert!(
        (20..=22).contains(&open),
        "{open} of 26 connections kept open"
    );
    let mut again = tcp_from("127.0.0.6", sb.sip).await;
    assert!(
        closed(&mut again, 2 * SEC).await,
        "connection flood banned: the next connection is closed too"
    );

    // Meanwhile a trusted PBX over TLS is served as usual.
    let tcp = tcp_from("127.0.0.1", tls).await;
    let me = tcp.local_addr().unwrap();
    let mut pbx = StreamPeer::new(tls_handshake(tcp, der).await.unwrap(), tls);
    pbx.send(&options_over("TLS", tls, me, "pbx", "PBX")).await;
    pbx.expect_response(200, "OPTIONS", 2 * SEC).await;
    sb.stop().await;

    // With trusted networks and untrusted = "reject": 403 over TCP, then
    // courtline closes the connection.
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32450, 32499),
        sip_extra: "[sip.shield]\ntrusted = [\"127.0.0.1/32\"]\nuntrusted = \"reject\"\n".into(),
        ..Options::default()
    })
    .await;
    let stream = tcp_from("127.0.0.2", sb.sip).await;
    let me = stream.local_addr().unwrap();
    let mut stranger = StreamPeer::new(stream, sb.sip);
    stranger
        .send(&options_over("TCP", sb.sip, me, "s1", "x"))
        .await;
    stranger.expect_response(403, "OPTIONS", 2 * SEC).await;
    assert!(
        closed(&mut stranger.stream, 2 * SEC).await,
        "connection closed after the 403"
    );
    sb.stop().await;

    // With untrusted = "drop", an untrusted source's connection is closed at accept.
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32450, 32499),
        sip_extra: "[sip.shield]\ntrusted = [\"127.0.0.1/32\"]\nuntrusted = \"drop\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut stranger = tcp_from("127.0.0.2", sb.sip).await;
    assert!(
        closed(&mut stranger, 2 * SEC).await,
        "untrusted connection dropped at accept"
    );
    sb.stop().await;
}

/// An INVITE from `caller` that names `claimed` in `X-Orig-IP`, as a proxy in
/// front of courtline (Kamailio) would.
async fn invite_naming(caller: &Caller, claimed: &str) {
    let body = sdp(caller.rtp.local_addr().unwrap(), "0");
    let (target, me) = (caller.target, caller.sip.addr);
    let text = caller
        .initial(
            "INVITE",
            &format!("sip:02112368@{target}"),
            &format!("<sip:02112368@{target}>"),
        )
        .header("Contact", format_args!("<sip:13800138000@{me}>"))
        .header("X-Orig-IP", claimed)
        .body("application/sdp", &body)
        .text();
    caller.sip.send(target, &text).await;
}

/// Answers and ends a call whose INVITE is out, then returns its record.
async fn answered_record(
    sb: &TestSwitchboard,
    caller: &mut Caller,
) -> courtline::contract::pb::CallRecord {
    let ok = caller.sip.expect_status(200, 10 * SEC).await;
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-1").await;
    caller.hang_up().await;
    sb.record(&caller.call_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_caller_and_nobody_else_can() {
    // 127.0.0.1 is the proxy; the ACL lets in 198.51.100.0/24 and 127.0.0.5 only.
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32700, 32799),
        sip_extra: "trusted_proxies = [\"127.0.0.1\"]\n[sip.shield]\n\
                    trusted = [\"198.51.100.0/24\", \"127.0.0.5/32\"]\nuntrusted = \"reject\"\n"
            .into(),
        ..Options::default()
    })
    .await;
    // Through the proxy, a caller in the ACL: admitted, recorded by its own
    // address and the proxy's.
    let mut forwarded = Caller::new(sb.sip).await;
    invite_naming(&forwarded, "198.51.100.7").await;
    let record = answered_record(&sb, &mut forwarded).await;
    assert_eq!(record.caller_source, "198.51.100.7");
    assert_eq!(record.proxy_source, forwarded.sip.addr.to_string());

    // Through the proxy, a caller outside the ACL: 403 (to the proxy), though
    // the proxy itself is in no trusted network either way.
    let outside = Caller::new(sb.sip).await;
    invite_naming(&outside, "203.0.113.9").await;
    outside.sip.expect_status(403, 2 * SEC).await;

    // A source that is no proxy cannot name anybody: judged by its own
    // address (in the ACL), recorded with it, no proxy.
    let mut stranger = Caller {
        sip: SipPeer::bind_on("127.0.0.5").await,
        ..Caller::new(sb.sip).await
    };
    invite_naming(&stranger, "203.0.113.9").await;
    let record = answered_record(&sb, &mut stranger).await;
    assert_eq!(record.caller_source, stranger.sip.addr.to_string());
    assert_eq!(record.proxy_source, "");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_banned_behind_a_trusted_proxy_is_logged_as_the_caller_not_the_proxy() {
    use support::serve_child::{one_line_config, prompt_file, wait_for_log, ServeChild};
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("prompt.wav");
    write_test_prompt(&wav, 500);
    let config = dir.path().join("courtline.toml");
    let sip =
        "trusted_proxies = [\"127.0.0.1\"]\n[sip.shield]\nrate_per_s = 1.0\nburst = 5\nban_s = 60";
    std::fs::write(
        &config,
        one_line_config(
            dir.path(),
            "38400-38419",
            sip,
            "warning",
            &prompt_file(&wav),
            "",
        ),
    )
    .unwrap();
    let serve = ServeChild::start(dir, config).await;
    // The proxy relays a flood from one caller, naming it in X-Orig-IP.
    let proxy = SipPeer::bind().await;
    for i in 0..20 {
        let relayed = options(serve.sip, proxy.addr, &format!("relayed{i}"), "caller")
            .replace("User-Agent:", "X-Orig-IP: 203.0.113.9\r\nUser-Agent:");
        proxy.send(serve.sip, &relayed).await;
    }
    let ban = wait_for_log(&serve.log, "caller behind a trusted proxy banned", 1).await;
    assert_eq!(ban["fields"]["source"], "203.0.113.9", "{ban}");
    assert_eq!(ban["fields"]["proxy"], "127.0.0.1", "{ban}");
    // The proxy itself still gets answers: only the caller was banned.
    proxy
        .send(
            serve.sip,
            &options(serve.sip, proxy.addr, "proxy-own", "kamailio"),
        )
        .await;
    loop {
        let answer = proxy.expect_status(200, 10 * SEC).await;
        if answer.header("call-id") == Some("proxy-own") {
            break;
        }
    }
}
