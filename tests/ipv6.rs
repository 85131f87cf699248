//! IPv6: SIP and RTP on `[::1]`, `c=IN IP6` in both legs' SDP, an operator at
//! an IPv6 address (`sip:operator@[::1]:port`), the IPv6 caller's record; and a
//! dual-stack `[::]` switchboard whose IPv4 peers stay IPv4 (SDP, record) while
//! calls cross between the families. (tests/sipp/run.sh's `ipv6` case runs
//! SIPp on `::1` on both sides.)

mod support;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use courtline::contract::pb::EndReason;
use support::{recv_rtp, relayed, sdp, Caller, Options, SipPeer, TestSwitchboard};
use tokio::net::UdpSocket;

/// `\r\nc=IN IP4 127.0.0.1\r\n` or `\r\nc=IN IP6 ::1\r\n`: the SDP connection
/// line for loopback of `ip`'s family.
fn loopback_connection(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "\r\nc=IN IP4 127.0.0.1\r\n"
    } else {
        "\r\nc=IN IP6 ::1\r\n"
    }
}

/// An operator phone on loopback (`127.0.0.1` or `::1`): SIP and RTP sockets.
struct Operator {
    /// Its SIP socket.
    sip: SipPeer,
    /// Its RTP socket (in its answer).
    rtp: UdpSocket,
}

impl Operator {
    /// Binds both sockets on `ip`.
    async fn on(ip: &str) -> Operator {
        Operator {
            sip: SipPeer::bind_on(ip).await,
            rtp: UdpSocket::bind((ip, 0)).await.unwrap(),
        }
    }

    /// `sip:operator@127.0.0.1:port` or `sip:operator@[::1]:port`.
    fn uri(&self) -> String {
        format!("sip:operator@{}", self.sip.addr)
    }
}

/// A switchboard listening on `listen`, ringing `operator`, with a 200 ms warning.
async fn switchboard(listen: &str, operator: &Operator, rtp_ports: (u16, u16)) -> TestSwitchboard {
    TestSwitchboard::start(Options {
        sip_listen: listen.into(),
        operators: vec![operator.uri()],
        prompt_ms: 200,
        rtp_ports,
        ..Options::default()
    })
    .await
}

/// Calls the line at `target` from loopback of `target`'s family: checks each
/// leg's SDP is in its peer's family, the warning, the bridge (audio both
/// ways), and the record (the caller's own address as `caller_source`).
async fn bridged_and_recorded(sb: &TestSwitchboard, target: SocketAddr, operator: &Operator) {
    let mut caller = Caller::new(target).await;
    let ok = caller.call("0").await;
    assert!(
        ok.body.contains(loopback_connection(target.ip())),
        "{target}: {}",
        ok.body
    );
    let toward_caller = ok.sdp_rtp_addr();
    let (_, from) = recv_rtp(&caller.rtp, Duration::from_secs(10))
        .await
        .expect("the warning");
    assert_eq!(from, toward_caller);

    let invite = operator
        .sip
        .expect_request("INVITE", Duration::from_secs(10))
        .await;
    assert!(
        invite
            .first_line
            .starts_with(&format!("INVITE {} ", operator.uri())),
        "{}",
        invite.first_line
    );
    assert!(
        invite
            .body
            .contains(loopback_connection(operator.sip.addr.ip())),
        "{target}: {}",
        invite.body
    );
    let toward_operator = invite.sdp_rtp_addr();
    operator
        .sip
        .answer_invite(&invite, "op", &sdp(operator.rtp.local_addr().unwrap(), "0"))
        .await;
    relayed(
        &caller.rtp,
        toward_caller,
        &operator.rtp,
        Duration::from_secs(10),
    )
    .await;
    relayed(
        &operator.rtp,
        toward_operator,
        &caller.rtp,
        Duration::from_secs(10),
    )
    .await;

    caller.hang_up().await;
    operator
        .sip
        .expect_request("BYE", Duration::from_secs(10))
        .await;
    let record = sb.record(&caller.call_id).await;
    // An IPv4 caller of a dual-stack address is recorded as such, not as ::ffff:127.0.0.1.
    assert_eq!(record.caller_source, caller.sip.addr.to_string());
    assert_eq!(record.caller_number, "13800138000");
    assert_eq!(
        EndReason::try_from(record.end_reason),
        Ok(EndReason::CallerHungUp)
    );
    assert!(record.prompt_completed);
    assert!(record.operator_answered_at_ms > 0);
}

/// The loopback addresses of both families at `port`.
fn both_loopbacks(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_and_an_operator_on_ipv6_are_bridged_and_recorded() {
    let operator = Operator::on("::1").await;
    let sb = switchboard("[::1]:0", &operator, (46700, 46729)).await;
    assert!(sb.sip.is_ipv6(), "{}", sb.sip);
    // Records show the caller as [::1]:port (bridged_and_recorded compares).
    bridged_and_recorded(&sb, sb.sip, &operator).await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_address_takes_ipv4_and_ipv6_callers_to_an_ipv4_operator() {
    let operator = Operator::on("127.0.0.1").await;
    let sb = switchboard("[::]:0", &operator, (46730, 46759)).await;
    for target in both_loopbacks(sb.sip.port()) {
        bridged_and_recorded(&sb, target, &operator).await;
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_address_takes_ipv4_and_ipv6_callers_to_an_ipv6_operator() {
    let operator = Operator::on("::1").await;
    let sb = switchboard("[::]:0", &operator, (46760, 46789)).await;
    for target in both_loopbacks(sb.sip.port()) {
        bridged_and_recorded(&sb, target, &operator).await;
    }
    sb.stop().await;
}
