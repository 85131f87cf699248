//! Inbound digest authentication against a hand-written SIP caller on
//! loopback: an untrusted caller is challenged (401, SHA-256, qop=auth), gets
//! in with the right password and is refused (403, recorded) with a wrong one;
//! an exempt source is never challenged.

mod support;

use std::time::Duration;

use courtline::contract::pb::EndReason;
use sha2::{Digest, Sha256};
use support::{sdp, Options, RawRequest, SipPeer, TestSwitchboard};
use tokio::net::UdpSocket;

const SEC: Duration = Duration::from_secs(1);

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A quoted parameter of a challenge.
fn param(challenge: &str, name: &str) -> String {
    let start = challenge
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {challenge}"))
        + name.len()
        + 2;
    challenge[start..].split('"').next().unwrap().to_string()
}

/// Sends INVITE number `cseq` of the call `call_id` from `peer`, with an
/// Authorization header when given.
async fn invite(
    peer: &SipPeer,
    rtp: &UdpSocket,
    target: std::net::SocketAddr,
    call_id: &str,
    cseq: u32,
    authorization: Option<&str>,
) {
    let body = sdp(rtp.local_addr().unwrap(), "0");
    let me = peer.addr;
    let mut invite = RawRequest::new(
        "INVITE",
        format_args!("sip:02112368@{target}"),
        me,
        &format!("z9hG4bK-{cseq}-{call_id}"),
    )
    .dialog(
        &format!("<sip:13800138000@{me}>;tag=auth1"),
        &format!("<sip:02112368@{target}>"),
        call_id,
    )
    .cseq(cseq)
    .header("Contact", format_args!("<sip:13800138000@{me}>"));
    if let Some(authorization) = authorization {
        invite = invite.header("Authorization", authorization);
    }
    let text = invite.body("application/sdp", &body).text();
    peer.send(target, &text).await;
}

/// Credentials for a challenge, computed as RFC 7616 §3.4.1 says.
fn credentials(challenge: &str, target: std::net::SocketAddr, password: &str) -> String {
    let (realm, nonce) = (param(challenge, "realm"), param(challenge, "nonce"));
    let uri = format!("sip:02112368@{target}");
    let ha1 = sha256_hex(&format!("caller:{realm}:{password}"));
    let ha2 = sha256_hex(&format!("INVITE:{uri}"));
    let response = sha256_hex(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"caller\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"0a4f113b\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_callers_authenticate_and_exempt_ones_do_not() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32400, 32449),
        sip_extra: "[sip.inbound_auth]\nrealm = \"court.test\"\nalgorithm = \"SHA-256\"\nusers = [{ username = \"caller\", password = \"s3cret\" }]\nexempt = [\"127.0.0.2\"]\n".into(),
        ..Options::default()
    })
    .await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Untrusted, right password: 401, then in.
    let peer = SipPeer::bind().await;
    invite(&peer, &rtp, sb.sip, "good@test", 1, None).await;
    let challenge = peer.expect_status(401, 10 * SEC).await;
    let www = challenge.header("www-authenticate").expect("a challenge");
    assert!(
        www.starts_with("Digest ") && www.contains("algorithm=SHA-256"),
        "{www}"
    );
    assert_eq!(param(www, "qop"), "auth");
    let answer = credentials(www, sb.sip, "s3cret");
    invite(&peer, &rtp, sb.sip, "good@test", 2, Some(&answer)).await;
    let ok = peer.expect_status(200, 10 * SEC).await;
    assert_eq!(ok.header("cseq"), Some("2 INVITE"));

    // Untrusted, wrong password: 401, then 403 and a record of the refusal.
    let intruder = SipPeer::bind().await;
    invite(&intruder, &rtp, sb.sip, "wrong@test", 1, None).await;
    let challenge = intruder.expect_status(401, 10 * SEC).await;
    let answer = credentials(
        challenge.header("www-authenticate").unwrap(),
        sb.sip,
        "guess",
    );
    invite(&intruder, &rtp, sb.sip, "wrong@test", 2, Some(&answer)).await;
    intruder.expect_status(403, 10 * SEC).await;
    let refused = sb.record("wrong@test").await;
    assert_eq!(refused.end_reason, EndReason::Rejected as i32);
    assert_eq!(refused.sip_final_status, 403);

    // A replayed nonce from another address is not accepted either: a fresh challenge.
    let replay = SipPeer::bind_on("127.0.0.3").await;
    invite(
        &replay,
        &rtp,
        sb.sip,
        "replay@test",
        2,
        Some(&credentials(www, sb.sip, "s3cret")),
    )
    .await;
    replay.expect_status(401, 10 * SEC).await;

    // Exempt trunk: no challenge.
    let trunk = SipPeer::bind_on("127.0.0.2").await;
    invite(&trunk, &rtp, sb.sip, "trunk@test", 1, None).await;
    trunk.expect_status(200, 10 * SEC).await;
    sb.stop().await;
}
