//! Office hours against the real service on loopback: outside its hours a line
//! plays its after-hours playlist and then hangs up politely or dials its duty
//! number; and the hours follow the configured zone, never the machine's.

mod support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use courtline::config::hours::{Calendar, OfficeHours};
use courtline::contract::pb::EndReason;
use support::*;

const SEC: Duration = Duration::from_secs(1);

/// Whether `peer` gets an INVITE within 300 ms (it may get OPTIONS: operators are qualified).
async fn invited(peer: &SipPeer) -> bool {
    while let Some(message) = peer.recv(Duration::from_millis(300)).await {
        if message.method() == "INVITE" {
            return true;
        }
    }
    false
}

/// A line that is never staffed (no weekly hours), with `after` as its after-hours call.
fn closed_line(after: &str) -> String {
    format!(
        "hours = \"closed\"\nafter_hours = {after}\n\n[hours.closed]\nzone = \"Asia/Shanghai\"\nweekly = []\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hours_the_caller_hears_the_playlist_then_a_bye() {
    let operator = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 400,
        rtp_ports: (41700, 41749),
        line_extra: closed_line("{ prompt = \"test\" }"),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    for i in 0..sb.playlist.frame_count() {
        recv_rtp(&caller.rtp, SEC)
            .await
            .unwrap_or_else(|| panic!("after-hours prompt packet {i} missing"));
    }
    let bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller
        .sip
        .send(sb.sip, &response_text(&bye, "200 OK", None, "", ""))
        .await;
    assert!(!invited(&operator).await, "nobody is dialled outside hours");
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.end_reason(), EndReason::AfterHours);
    assert!(record.prompt_completed);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hours_the_duty_officer_is_dialled_after_the_playlist() {
    let operator = SipPeer::bind().await;
    let duty = SipPeer::bind().await;
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:operator@{}", operator.addr)],
        prompt_ms: 400,
        rtp_ports: (41750, 41799),
        line_extra: closed_line(&format!(
            "{{ prompt = \"test\", operator = \"sip:duty@{}\" }}",
            duty.addr
        )),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = duty.expect_request("INVITE", 5 * SEC).await;
    assert!(
        invite.first_line.starts_with("INVITE sip:duty@"),
        "{}",
        invite.first_line
    );
    assert!(!invited(&operator).await, "the day operator is not dialled");
    duty.respond(&invite, "486 Busy Here", Some("duty"), "", "")
        .await;
    let bye = caller.sip.expect_request("BYE", 10 * SEC).await;
    caller
        .sip
        .send(sb.sip, &response_text(&bye, "200 OK", None, "", ""))
        .await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.end_reason(), EndReason::OperatorBusy);
    assert!(record.operator_uri.starts_with("sip:duty@"));
    sb.stop().await;
}

/// Whether the 2026 calendar's office is open at these Shanghai wall-clock times.
fn shanghai_openings() -> Vec<bool> {
    let text = std::fs::read_to_string(repo_path("config/calendars/cn-2026.txt")).unwrap();
    let mut calendar = Calendar::default();
    calendar.parse("cn-2026.txt", &text).unwrap();
    let hours =
        OfficeHours::new("Asia/Shanghai", &["mon-fri 09:00-17:00".into()], calendar).unwrap();
    [
        (2026, 9, 30, 10),  // Wednesday before National Day: open
        (2026, 10, 1, 10),  // National Day (Thursday): closed
        (2026, 10, 7, 10),  // last day off (Wednesday): closed
        (2026, 10, 10, 10), // Saturday worked (调休): open
        (2026, 10, 11, 10), // ordinary Sunday: closed
        (2026, 10, 12, 8),  // Monday before 09:00: closed
    ]
    .into_iter()
    .map(|(y, m, d, h)| {
        let at = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        hours.is_open(at)
    })
    .collect()
}

const EXPECTED: [bool; 6] = [true, false, false, true, false, false];

/// Set in the child run: the machine's zone is changed to one 14 hours ahead.
const CHILD: &str = "COURTLINE_TEST_OTHER_ZONE";

#[test]
fn the_schedule_follows_its_zone_whatever_the_machines_zone() {
    if std::env::var_os(CHILD).is_some() {
        // The zone really changed for this process (UTC+14 all year)...
        let offset = chrono::Local::now().offset().local_minus_utc();
        assert_eq!(offset, 14 * 3600, "TZ was not applied");
        // ...and the hours did not move with it.
        assert_eq!(shanghai_openings(), EXPECTED);
        return;
    }
    assert_eq!(shanghai_openings(), EXPECTED);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_schedule_follows_its_zone_whatever_the_machines_zone",
            "--nocapture",
        ])
        .env("TZ", "Pacific/Kiritimati")
        .env(CHILD, "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the run under TZ=Pacific/Kiritimati failed"
    );
}
