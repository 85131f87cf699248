//! Hunt strategies against real sockets: `simultaneous` rings every operator
//! at once and cancels the others when one answers; `round_robin` starts each
//! call one operator further down the list.

mod support;

use std::time::Duration;

use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{CallRecord, EndReason, GetCallRequest};
use support::*;
use tokio::net::UdpSocket;

const SEC: Duration = Duration::from_secs(1);

fn reason(r: &CallRecord) -> EndReason {
    EndReason::try_from(r.end_reason).unwrap()
}

/// The operator milestones of a call's timeline: (kind, detail).
async fn operator_steps(sb: &TestSwitchboard, record: &CallRecord) -> Vec<(String, String)> {
    let mut client = RecordsServiceClient::connect(format!("http://{}", sb.records))
        .await
        .unwrap();
    client
        .get_call(GetCallRequest {
            call_id: record.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline
        .into_iter()
        .filter(|e| e.kind.starts_with("operator_"))
        .map(|e| (e.kind, e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_rings_both_the_second_answers_and_the_first_is_cancelled() {
    let first = SipPeer::bind().await;
    let second = SipPeer::bind().await;
    let second_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first_uri = format!("sip:desk1@{}", first.addr);
    let second_uri = format!("sip:desk2@{}", second.addr);
    let sb = TestSwitchboard::start(Options {
        operators: vec![first_uri.clone(), second_uri.clone()],
        prompt_ms: 200,
        rtp_ports: (43000, 43049),
        line_extra: "hunt = \"simultaneous\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite1 = first.expect_request("INVITE", 5 * SEC).await;
    let invite2 = second.expect_request("INVITE", 5 * SEC).await;
    // Each fork offers its own RTP port.
    assert_ne!(invite1.sdp_rtp_addr(), invite2.sdp_rtp_addr());
    first
        .respond(&invite1, "180 Ringing", Some("one"), "", "")
        .await;
    second
        .respond(&invite2, "180 Ringing", Some("two"), "", "")
        .await;
    // Ringing a while, as phones do: the 180s are on record before the answer
    // (a 180 and a 200 in the same instant may be taken in either order).
    tokio::time::sleep(Duration::from_millis(500)).await;
    second
        .answer_invite(&invite2, "two", &sdp(second_rtp.local_addr().unwrap(), "0"))
        .await;
    let cancel = first.expect_request("CANCEL", 3 * SEC).await;
    first.respond(&cancel, "200 OK", Some("one"), "", "").await;
    first
        .respond(&invite1, "487 Request Terminated", Some("one"), "", "")
        .await;
    first.expect_request("ACK", 3 * SEC).await;

    caller.hang_up().await;
    let bye = second.expect_request("BYE", 3 * SEC).await;
    second.respond(&bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert_eq!(record.operator_uri, second_uri);
    let steps = operator_steps(&sb, &record).await;
    for step in [
        ("operator_dialed", first_uri.as_str()),
        ("operator_dialed", second_uri.as_str()),
        ("operator_ringing", first_uri.as_str()),
        ("operator_ringing", second_uri.as_str()),
        ("operator_answered", second_uri.as_str()),
        ("operator_cancelled", first_uri.as_str()),
    ] {
        assert!(
            steps.contains(&(step.0.to_string(), step.1.to_string())),
            "{step:?} missing in {steps:?}"
        );
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_from_a_cancelled_operator_gets_ack_and_bye() {
    let first = SipPeer::bind().await;
    let second = SipPeer::bind().await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sb = TestSwitchboard::start(Options {
        operators: vec![
            format!("sip:desk1@{}", first.addr),
            format!("sip:desk2@{}", second.addr),
        ],
        prompt_ms: 200,
        rtp_ports: (43050, 43099),
        line_extra: "hunt = \"simultaneous\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite1 = first.expect_request("INVITE", 5 * SEC).await;
    let invite2 = second.expect_request("INVITE", 5 * SEC).await;
    first
        .respond(&invite1, "180 Ringing", Some("one"), "", "")
        .await;
    second
        .answer_invite(&invite2, "two", &sdp(rtp.local_addr().unwrap(), "0"))
        .await;
    let cancel = first.expect_request("CANCEL", 3 * SEC).await;
    // Its 200 to the INVITE crossed the CANCEL.
    let contact = format!(
        "Contact: <sip:desk1@{}>\r\nContent-Type: application/sdp\r\n",
        first.addr
    );
    first
        .respond(
            &invite1,
            "200 OK",
            Some("one"),
            &contact,
            &sdp(rtp.local_addr().unwrap(), "0"),
        )
        .await;
    first
        .respond(
            &cancel,
            "481 Call/Transaction Does Not Exist",
            Some("one"),
            "",
            "",
        )
        .await;
    first.expect_request("ACK", 3 * SEC).await;
    let bye = first.expect_request("BYE", 3 * SEC).await;
    first.respond(&bye, "200 OK", None, "", "").await;
    // The call itself stays with the second operator.
    caller.hang_up().await;
    let bye = second.expect_request("BYE", 3 * SEC).await;
    second.respond(&bye, "200 OK", None, "", "").await;
    let record = sb.record(&caller.call_id).await;
    assert_eq!(record.operator_uri, format!("sip:desk2@{}", second.addr));
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_starts_each_call_at_the_next_operator() {
    let desks = [SipPeer::bind().await, SipPeer::bind().await];
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uris: Vec<String> = desks
        .iter()
        .enumerate()
        .map(|(i, d)| format!("sip:desk{i}@{}", d.addr))
        .collect();
    let sb = TestSwitchboard::start(Options {
        operators: uris.clone(),
        prompt_ms: 200,
        rtp_ports: (43100, 43149),
        line_extra: "hunt = \"round_robin\"\n".into(),
        ..Options::default()
    })
    .await;
    for call in 0..3 {
        let desk = &desks[call % 2];
        let other = &desks[(call + 1) % 2];
        let mut caller = Caller::new(sb.sip).await;
        caller.call("0").await;
        let invite = desk.expect_request("INVITE", 5 * SEC).await;
        desk.answer_invite(&invite, "t", &sdp(rtp.local_addr().unwrap(), "0"))
            .await;
        relayed(&rtp, invite.sdp_rtp_addr(), &caller.rtp, 5 * SEC).await;
        caller.hang_up().await;
        let bye = desk.expect_request("BYE", 3 * SEC).await;
        desk.respond(&bye, "200 OK", None, "", "").await;
        let record = sb.record(&caller.call_id).await;
        assert_eq!(record.operator_uri, uris[call % 2], "call {call}");
        // It may have been asked OPTIONS (qualify), never INVITEd.
        while let Some(message) = other.recv(Duration::from_millis(100)).await {
            assert_ne!(
                message.method(),
                "INVITE",
                "call {call}: the other desk was rung"
            );
        }
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answering_plays_the_failover_prompt_then_bye() {
    let desk = SipPeer::bind().await;
    let busy = repo_path("audio/busy_zh.wav");
    let sb = TestSwitchboard::start(Options {
        operators: vec![format!("sip:desk@{}", desk.addr)],
        prompt_ms: 200,
        prompt_rate: 8000,
        rtp_ports: (43150, 43199),
        line_extra: format!(
            "failover_prompt = \"busy\"\n\n[prompts.busy]\nfile = \"{}\"\nversion = \"1\"\n",
            busy.display()
        ),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let invite = desk.expect_request("INVITE", 5 * SEC).await;
    desk.respond(&invite, "486 Busy Here", Some("busy"), "", "")
        .await;
    desk.expect_request("ACK", 3 * SEC).await;
    // The 4 s notice, then a BYE; the caller's RTP socket hears it meanwhile.
    let mut packets = 0;
    let bye = loop {
        tokio::select! {
            bye = caller.sip.expect_request("BYE", 10 * SEC) => break bye,
            Some(_) = recv_rtp(&caller.rtp, SEC) => packets += 1,
        }
    };
    caller.sip.respond(&bye, "200 OK", None, "", "").await;
    assert!(
        packets > 150,
        "the notice was sent as RTP ({packets} packets)"
    );
    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::OperatorBusy);
    assert!(record.prompt_completed);
    let failover = record.prompts.last().unwrap();
    assert_eq!(failover.id, "busy");
    assert!(failover.length_ms > 3_000);
    assert_eq!(failover.ms_sent, failover.length_ms, "played in full");
    assert_eq!(record.prompt_ms_sent, record.prompt_length_ms);
    sb.stop().await;
}

/// Sends NOTIFY (Event: refer) with a sipfrag of `status_line` in the caller's dialog.
async fn notify_refer(caller: &mut Caller, courtline: std::net::SocketAddr, status_line: &str) {
    caller.cseq += 1;
    let text = RawRequest::new(
        "NOTIFY",
        format_args!("sip:courtline@{courtline}"),
        caller.sip.addr,
        &format!("z9hG4bK-notify-{}", caller.cseq),
    )
    .dialog(&caller.from, &caller.to, &caller.call_id)
    .cseq(caller.cseq)
    .header("Event", "refer")
    .header("Subscription-State", "terminated;reason=noresource")
    .body("message/sipfrag", &format!("{status_line}\r\n"))
    .text();
    caller.sip.send(courtline, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_accepted_and_the_transfer_succeeds_so_courtline_leaves() {
    let desk = SipPeer::bind().await;
    let desk_uri = format!("sip:desk@{}", desk.addr);
    let sb = TestSwitchboard::start(Options {
        operators: vec![desk_uri.clone()],
        prompt_ms: 200,
        rtp_ports: (43200, 43249),
        line_extra: "connect = \"refer\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let refer = caller.sip.expect_request("REFER", 5 * SEC).await;
    assert_eq!(
        refer.header("refer-to").map(|v| v.trim_matches(['<', '>'])),
        Some(desk_uri.as_str())
    );
    caller
        .sip
        .respond(&refer, "202 Accepted", None, "", "")
        .await;
    notify_refer(&mut caller, sb.sip, "SIP/2.0 100 Trying").await;
    caller.sip.expect_ok_to("NOTIFY", 3 * SEC).await;
    notify_refer(&mut caller, sb.sip, "SIP/2.0 200 OK").await;
    caller.sip.expect_ok_to("NOTIFY", 3 * SEC).await;
    let bye = caller.sip.expect_request("BYE", 3 * SEC).await;
    caller.sip.respond(&bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::Transferred);
    assert_eq!(record.operator_uri, desk_uri);
    assert!(record.prompt_completed);
    // courtline never called the desk itself.
    while let Some(message) = desk.recv(Duration::from_millis(100)).await {
        assert_ne!(message.method(), "INVITE");
    }
    let steps = operator_steps(&sb, &record).await;
    assert!(steps.is_empty(), "{steps:?}");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refer_falls_back_to_bridging() {
    let desk = SipPeer::bind().await;
    let desk_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let desk_uri = format!("sip:desk@{}", desk.addr);
    let sb = TestSwitchboard::start(Options {
        operators: vec![desk_uri.clone()],
        prompt_ms: 200,
        rtp_ports: (43250, 43299),
        line_extra: "connect = \"refer\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut caller = Caller::new(sb.sip).await;
    caller.call("0").await;
    let refer = caller.sip.expect_request("REFER", 5 * SEC).await;
    caller
        .sip
        .respond(&refer, "603 Declined", None, "", "")
        .await;
    // courtline calls the desk itself and bridges.
    let invite = desk.expect_request("INVITE", 5 * SEC).await;
    desk.answer_invite(&invite, "d", &sdp(desk_rtp.local_addr().unwrap(), "0"))
        .await;
    // Hanging up the instant the desk answers would race its 200 OK (CI saw
    // the call recorded as never answered): hang up once it is bridged.
    relayed(&desk_rtp, invite.sdp_rtp_addr(), &caller.rtp, 5 * SEC).await;
    caller.hang_up().await;
    let bye = desk.expect_request("BYE", 3 * SEC).await;
    desk.respond(&bye, "200 OK", None, "", "").await;

    let record = sb.record(&caller.call_id).await;
    assert_eq!(reason(&record), EndReason::CallerHungUp);
    assert!(record.operator_answered_at_ms > 0);
    let mut client = RecordsServiceClient::connect(format!("http://{}", sb.records))
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = client
        .get_call(GetCallRequest {
            call_id: record.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .timeline
        .into_iter()
        .filter(|e| e.kind.starts_with("transfer_"))
        .map(|e| (e.kind, e.detail))
        .collect();
    assert_eq!(
        kinds,
        [
            ("transfer_requested".to_string(), desk_uri.clone()),
            ("transfer_failed".to_string(), format!("{desk_uri} 603"))
        ]
    );
    sb.stop().await;
}
