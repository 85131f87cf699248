//! courtline registering with a PBX that challenges: digest auth, refresh
//! before expiry, back-off after refusal, and calls to the account.

mod support;

use std::time::Duration;

use rsipstack::dialog::authenticate::verify_digest;
use rsipstack::sip::{Method, SipMessage};
use support::*;

const SEC: Duration = Duration::from_secs(1);

/// Checks the Authorization of a REGISTER the way a PBX would.
fn digest_ok(raw: &str, password: &str) -> bool {
    let SipMessage::Request(request) = SipMessage::try_from(raw).unwrap() else {
        return false;
    };
    let ok = request.headers.iter().any(|h| match h {
        rsipstack::sip::Header::Authorization(auth) => {
            let value = auth.value().to_string();
            rsipstack::sip::typed::Authorization::parse(&value)
                .map(|typed| verify_digest(&typed, password, &Method::Register, &value))
                .unwrap_or(false)
        }
        _ => false,
    });
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_digest_refreshes_and_takes_calls_for_the_account() {
    let registrar = SipPeer::bind().await;
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 200,
        rtp_ports: (32100, 32199),
        sip_extra: format!(
            "\n[registration]\nregistrar = \"sip:{}\"\nusername = \"courtline\"\npassword = \"s3cret\"\nexpires_s = 60\nline = \"02112368\"\n",
            registrar.addr
        ),
        ..Options::default()
    })
    .await;
    let up = format!(
        r#"courtline_registration_up{{account="courtline",registrar="sip:{}"}}"#,
        registrar.addr
    );
    // First REGISTER: challenged.
    let first = registrar.expect_request("REGISTER", 3 * SEC).await;
    sb.expect_metric(&up, "0").await;
    assert!(first.header("authorization").is_none());
    let challenge = "WWW-Authenticate: Digest realm=\"court\", nonce=\"n0nce1\", qop=\"auth\", algorithm=MD5\r\n";
    registrar
        .respond(&first, "401 Unauthorized", Some("r"), challenge, "")
        .await;
    // Second: answers the challenge correctly.
    let mut buf = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(3 * SEC, registrar.socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&buf[..n]).to_string();
    let second = Sip::parse(&buf[..n], from);
    assert_eq!(second.method(), "REGISTER");
    assert!(
        digest_ok(&raw, "s3cret"),
        "digest answers the challenge:\n{raw}"
    );
    assert!(!digest_ok(&raw, "wrong"));
    let contact = second.header("contact").unwrap().to_string();
    // Grant 4 s: courtline must refresh at 75%, i.e. about 3 s later.
    registrar
        .respond(
            &second,
            "200 OK",
            Some("r"),
            &format!("Contact: {contact};expires=4\r\nExpires: 4\r\n"),
            "",
        )
        .await;
    let granted_at = tokio::time::Instant::now();
    sb.expect_metric(&up, "1").await;
    let refresh = registrar.expect_request("REGISTER", 6 * SEC).await;
    let waited = granted_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "refreshed too early: {waited:?}"
    );
    registrar
        .respond(&refresh, "401 Unauthorized", Some("r"), challenge, "")
        .await;
    let refresh = registrar.expect_request("REGISTER", 3 * SEC).await;
    registrar
        .respond(&refresh, "200 OK", Some("r"), "Expires: 60\r\n", "")
        .await;

    // The PBX sends a call to the account: it is taken for line 02112368.
    let mut caller = Caller::new(sb.sip).await;
    caller.invite("courtline", "0").await;
    let ok = caller.sip.expect_status(200, 3 * SEC).await;
    caller.to = ok.header("to").unwrap().to_string();
    let to = caller.to.clone();
    caller.ack(&to, "z9hG4bK-ack-reg").await;
    caller.request("BYE").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.line_number, "02112368");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_retried_with_back_off() {
    let registrar = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (32200, 32299),
        sip_extra: format!(
            "\n[registration]\nregistrar = \"sip:{}\"\nusername = \"courtline\"\npassword = \"pw\"\nexpires_s = 600\n",
            registrar.addr
        ),
        ..Options::default()
    })
    .await;
    let first = registrar.expect_request("REGISTER", 3 * SEC).await;
    registrar
        .respond(&first, "403 Forbidden", Some("r"), "", "")
        .await;
    let refused_at = tokio::time::Instant::now();
    registrar.expect_request("REGISTER", 5 * SEC).await;
    sb.expect_metric(
        &format!(
            r#"courtline_registration_up{{account="courtline",registrar="sip:{}"}}"#,
            registrar.addr
        ),
        "0",
    )
    .await;
    assert!(
        refused_at.elapsed() >= Duration::from_millis(800),
        "back-off before retrying"
    );
    sb.stop().await;
}
