//! The RFC 4475 "SIP Torture Test Messages", every one of them, sent over
//! real UDP to a courtline running on loopback. Each message gets what the
//! RFC says a UAS does with it (`tests/torture/README.md` is the manifest);
//! afterwards the switchboard still answers OPTIONS and no call is left.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{repo_path, Options, RawRequest, Sip, SipPeer, TestSwitchboard};
use tokio::time::Instant;

/// How long a response may take on a loaded machine before it counts as missing.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long to keep listening after the probe's answer for a late stray.
const STRAY_GRACE: Duration = Duration::from_millis(300);

/// What courtline must do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A final response with this status code (after any 100 Trying).
    Status(u16),
    /// Nothing at all: the message is a response nobody asked for, or junk.
    Silence,
}

/// One message of the corpus and what must happen to it.
struct Case {
    /// The RFC's name for the message, and its file name in `tests/torture/`.
    tag: &'static str,
    /// Where the RFC lists it.
    section: &'static str,
    /// What courtline must answer.
    expect: Expect,
    /// A header the response must carry, and text its value must contain.
    carries: Option<(&'static str, &'static str)>,
    /// Byte-for-byte substitutions made before sending, each the same length
    /// or outside the body, so the message reaches the code it tests
    /// (documented per message in the manifest).
    rewrite: &'static [(&'static str, &'static str)],
}

/// A case with no header check and no rewrite.
const fn case(tag: &'static str, section: &'static str, expect: Expect) -> Case {
    Case {
        tag,
        section,
        expect,
        carries: None,
        rewrite: &[],
    }
}

/// A case whose response must carry `header` containing `text`.
const fn carrying(
    tag: &'static str,
    section: &'static str,
    expect: Expect,
    header: &'static str,
    text: &'static str,
) -> Case {
    Case {
        tag,
        section,
        expect,
        carries: Some((header, text)),
        rewrite: &[],
    }
}

use Expect::{Silence, Status};

/// The INVITE tests of RFC 4475 §3.3.6 and §3.3.15 address a user the RFC
/// leaves open; courtline refuses unknown lines (404) before it looks at
/// content, so these two are sent to the configured line. sdp01's offer is
/// pointed at loopback (same length) so that no RTP could ever leave the
/// machine, whatever courtline did with it.
const TO_THE_LINE: &[(&str, &str)] = &[(
    "INVITE sip:user@example.com SIP/2.0",
    "INVITE sip:02112368@example.com SIP/2.0",
)];
const SDP01_TO_THE_LINE: &[(&str, &str)] = &[
    (
        "INVITE sip:user@example.com SIP/2.0",
        "INVITE sip:02112368@example.com SIP/2.0",
    ),
    ("IN IP4 192.0.2.5", "IN IP4 127.0.0.1"),
];

/// Every message in RFC 4475 §3, in the RFC's order.
const CASES: &[Case] = &[
    // §3.1.1 Valid messages.
    case("wsinv", "3.1.1.1", Status(481)),
    carrying("intmeth", "3.1.1.2", Status(501), "allow", "INVITE"),
    case("esc01", "3.1.1.3", Status(404)),
    carrying("escnull", "3.1.1.4", Status(405), "allow", "INVITE"),
    carrying("esc02", "3.1.1.5", Status(501), "allow", "INVITE"),
    case("lwsdisp", "3.1.1.6", Status(200)),
    case("longreq", "3.1.1.7", Status(404)),
    case("dblreq", "3.1.1.8", Status(405)),
    case("semiuri", "3.1.1.9", Status(200)),
    case("transports", "3.1.1.10", Status(200)),
    case("mpart01", "3.1.1.11", Status(405)),
    case("unreason", "3.1.1.12", Silence),
    case("noreason", "3.1.1.13", Silence),
    // §3.1.2 Invalid messages.
    case("badinv01", "3.1.2.1", Status(400)),
    case("clerr", "3.1.2.2", Status(400)),
    case("ncl", "3.1.2.3", Status(400)),
    case("scalar02", "3.1.2.4", Status(400)),
    case("scalarlg", "3.1.2.5", Silence),
    case("quotbal", "3.1.2.6", Status(400)),
    case("ltgtruri", "3.1.2.7", Status(400)),
    case("lwsruri", "3.1.2.8", Status(400)),
    case("lwsstart", "3.1.2.9", Status(400)),
    case("trws", "3.1.2.10", Status(400)),
    case("escruri", "3.1.2.11", Status(400)),
    case("baddate", "3.1.2.12", Status(400)),
    case("regbadct", "3.1.2.13", Status(400)),
    case("badaspec", "3.1.2.14", Status(400)),
    case("baddn", "3.1.2.15", Status(400)),
    case("badvers", "3.1.2.16", Status(505)),
    case("mismatch01", "3.1.2.17", Status(400)),
    carrying("mismatch02", "3.1.2.18", Status(501), "allow", "INVITE"),
    case("bigcode", "3.1.2.19", Silence),
    // §3.2 Transaction layer semantics.
    case("badbranch", "3.2.1", Status(200)),
    // §3.3 Application layer semantics.
    case("insuf", "3.3.1", Status(400)),
    case("unkscm", "3.3.2", Status(416)),
    case("novelsc", "3.3.3", Status(416)),
    carrying("unksm2", "3.3.4", Status(405), "allow", "INVITE"),
    carrying(
        "bext01",
        "3.3.5",
        Status(420),
        "unsupported",
        "nothingSupportsThis, nothingSupportsThisEither",
    ),
    Case {
        tag: "invut",
        section: "3.3.6",
        expect: Status(415),
        carries: Some(("accept", "application/sdp")),
        rewrite: TO_THE_LINE,
    },
    carrying("regaut01", "3.3.7", Status(405), "allow", "INVITE"),
    case("multi01", "3.3.8", Status(400)),
    case("mcl01", "3.3.9", Status(400)),
    case("bcast", "3.3.10", Silence),
    case("zeromf", "3.3.11", Status(200)),
    case("cparam01", "3.3.12", Status(405)),
    case("cparam02", "3.3.13", Status(405)),
    case("regescrt", "3.3.14", Status(405)),
    Case {
        tag: "sdp01",
        section: "3.3.15",
        expect: Status(406),
        carries: None,
        rewrite: SDP01_TO_THE_LINE,
    },
    // §3.4 Backward compatibility.
    case("inv2543", "3.4.1", Status(400)),
];

/// The message bytes as sent: the file with the case's rewrites applied.
fn message(case: &Case) -> Vec<u8> {
    let path = repo_path(&format!("tests/torture/{}.dat", case.tag));
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in case.rewrite {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap_or_else(|| panic!("{}: no {from:?} to rewrite", case.tag));
        bytes.splice(at..at + from.len(), to.bytes());
    }
    bytes
}

/// An OPTIONS from `peer` that courtline always answers 200; its answer marks
/// that everything the switchboard read before it has been dealt with.
async fn probe(peer: &SipPeer, server: SocketAddr, call_id: &str) {
    let me = peer.addr;
    let text = RawRequest::new(
        "OPTIONS",
        format_args!("sip:02112368@{server}"),
        me,
        &format!("z9hG4bK-{call_id}"),
    )
    .dialog(
        &format!("<sip:probe@{me}>;tag=probe"),
        &format!("<sip:02112368@{server}>"),
        call_id,
    )
    .cseq(1)
    .text();
    peer.send(server, &text).await;
}

/// Everything `peer` receives until the probe `call_id` is answered, plus a
/// short grace for late strays; panics if the probe goes unanswered.
async fn until_probe_answered(peer: &SipPeer, call_id: &str) -> Vec<Sip> {
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = peer
            .recv(left)
            .await
            .unwrap_or_else(|| panic!("probe {call_id} unanswered within {ANSWER_WAIT:?}"));
        let is_probe_answer = message.header("call-id") == Some(call_id) && message.status() >= 200;
        received.push(message);
        if is_probe_answer {
            break;
        }
    }
    while let Some(late) = peer.recv(STRAY_GRACE).await {
        received.push(late);
    }
    received
}

/// Sends one case and checks what comes back.
async fn run_case(sb: &TestSwitchboard, case: &Case) {
    let peer = SipPeer::bind().await;
    let bytes = message(case);
    peer.socket
        .send_to(&bytes, sb.sip)
        .await
        .unwrap_or_else(|e| panic!("{}: send: {e}", case.tag));
    let answer = match case.expect {
        Status(_) => Some(final_answer(&peer, case).await),
        Silence => None,
    };
    if let (Some(answer), Status(code)) = (&answer, case.expect) {
        assert_eq!(
            answer.status(),
            code,
            "{} (RFC 4475 §{}): got {:?}",
            case.tag,
            case.section,
            answer.first_line
        );
        if let Some((header, text)) = case.carries {
            let value = answer
                .header(header)
                .unwrap_or_else(|| panic!("{}: {code} without {header}: {answer:?}", case.tag));
            assert!(
                value.contains(text),
                "{}: {header}: {value:?} lacks {text:?}",
                case.tag
            );
        }
    }
    // Then: nothing else, except retransmissions of that same answer.
    let probe_id = format!("probe-after-{}", case.tag);
    probe(&peer, sb.sip, &probe_id).await;
    for stray in until_probe_answered(&peer, &probe_id).await {
        if stray.header("call-id") == Some(probe_id.as_str()) {
            continue;
        }
        let repeat = answer.as_ref().is_some_and(|a| {
            a.first_line == stray.first_line && a.header("call-id") == stray.header("call-id")
        });
        assert!(
            repeat || stray.status() == 100,
            "{} (RFC 4475 §{}): unexpected {:?} (expected {:?})",
            case.tag,
            case.section,
            stray.first_line,
            case.expect
        );
    }
}

/// The first final response `peer` receives, skipping 100 Trying.
async fn final_answer(peer: &SipPeer, case: &Case) -> Sip {
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = peer.recv(left).await.unwrap_or_else(|| {
            panic!(
                "{} (RFC 4475 §{}): no answer within {ANSWER_WAIT:?}, expected {:?}",
                case.tag, case.section, case.expect
            )
        });
        if message.status() >= 200 {
            return message;
        }
        assert_eq!(
            message.status(),
            100,
            "{}: {:?}",
            case.tag,
            message.first_line
        );
    }
}

#[test]
fn the_corpus_is_every_message_of_the_rfc() {
    let files: BTreeSet<String> = std::fs::read_dir(repo_path("tests/torture"))
        .expect("tests/torture")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".dat").map(str::to_string)
        })
        .collect();
    let cases: BTreeSet<String> = CASES.iter().map(|c| c.tag.to_string()).collect();
    assert_eq!(files, cases, "files in tests/torture/ and cases differ");
    assert_eq!(CASES.len(), 49, "RFC 4475 §3 lists 49 messages");
    let manifest = std::fs::read_to_string(repo_path("tests/torture/README.md"))
        .expect("tests/torture/README.md");
    for case in CASES {
        let row = format!("| `{}` | {} |", case.tag, case.section);
        assert!(
            manifest.contains(&row),
            "manifest lacks a row for {}",
            case.tag
        );
    }
}

#[test]
fn declared_body_lengths_match_the_rfc() {
    // A transcription check: where the RFC means the Content-Length to be
    // right, it is. clerr, ncl and mcl01 are wrong on purpose, dblreq's body
    // is the stray INVITE, and inv2543 has no Content-Length at all.
    for case in CASES {
        if ["clerr", "ncl", "mcl01", "dblreq", "inv2543"].contains(&case.tag) {
            continue;
        }
        let bytes = message(case);
        let head_end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{}: no end of headers", case.tag));
        let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
        let declared: usize = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| {
                let n = n.trim();
                n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no Content-Length", case.tag));
        assert_eq!(declared, bytes.len() - head_end - 4, "{}", case.tag);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_is_handled_as_the_rfc_says_and_nothing_breaks() {
    let sb = TestSwitchboard::start(Options {
        rtp_ports: (34400, 34499),
        ..Options::default()
    })
    .await;
    for case in CASES {
        run_case(&sb, case).await;
    }

    // Still serving, and no call left behind.
    let peer = SipPeer::bind().await;
    probe(&peer, sb.sip, "probe-final").await;
    let answers = until_probe_answered(&peer, "probe-final").await;
    assert!(answers.iter().any(|a| a.status() == 200), "{answers:?}");
    let active = sb.running.as_ref().expect("running").active_calls.clone();
    let deadline = Instant::now() + ANSWER_WAIT;
    while active.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "a torture message left a call active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The INVITEs refused by admission are on record, like any refused call.
    for call_id in [
        "esc01.239409asdfakjkn23onasd0-3234",
        "invut.0ha0isndaksdjadsfij34n23d",
    ] {
        sb.record(call_id).await;
    }
    sb.stop().await;
}
