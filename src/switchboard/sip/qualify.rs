//! OPTIONS keep-alive ("qualify") toward operator targets.
//!
//! An operator phone that was unplugged makes every caller wait through a
//! ring timeout before the hunt list moves on. courtline pings each operator
//! target with OPTIONS; one that stops answering is marked down and skipped
//! by the hunt list until it answers again.
//!
//! That takes two probe intervals; a call dialling a dead target in the
//! meantime finds out faster from [`udp_refusal`]: the kernel's verdict
//! (ICMP port unreachable) on a datagram sent to a target that is silent.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::sip::{typed, Method, Param, SipMessage, StatusCode, StatusCodeKind, Uri};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::make_tag;
use rsipstack::transaction::transaction::Transaction;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Consecutive unanswered probes before a target is marked down.
pub const FAILURES_BEFORE_DOWN: u32 = 2;

/// One target's standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TargetHealth {
    /// Probes in a row without a final response.
    failures: u32,
    /// Marked down (skipped by hunt lists).
    down: bool,
}

/// Up/down state of every operator target; shared by the prober and admission.
#[derive(Debug, Default)]
pub struct OperatorHealth {
    /// By operator URI as configured.
    targets: Mutex<HashMap<String, TargetHealth>>,
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// The target stopped answering.
    WentDown,
    /// The target answers again.
    CameBack,
}

impl OperatorHealth {
    /// Records one probe result; returns a change of state, if any.
    pub fn record(&self, uri: &str, answered: bool) -> Option<HealthChange> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let health = targets.entry(uri.to_string()).or_default();
        if answered {
            health.failures = 0;
            if health.down {
                health.down = false;
                return Some(HealthChange::CameBack);
            }
            return None;
        }
        health.failures += 1;
        if !health.down && health.failures >= FAILURES_BEFORE_DOWN {
            health.down = true;
            return Some(HealthChange::WentDown);
        }
        None
    }

    /// Whether a target is marked down (unknown targets are up).
    pub fn is_down(&self, uri: &str) -> bool {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.get(uri).is_some_and(|h| h.down)
    }

    /// The hunt list without targets marked down; if every target is down the
    /// whole list is kept, so the caller is still answered and hears the
    /// warning (and is on record). A target still down when the call dials it
    /// fails at once, recorded `operator_unreachable`, without being rung.
    pub fn hunt_list(&self, operators: &[String]) -> Vec<String> {
        let up: Vec<String> = operators
            .iter()
            .filter(|u| !self.is_down(u))
            .cloned()
            .collect();
        if up.is_empty() {
            operators.to_vec()
        } else {
            up
        }
    }
}

/// Probes every target every `interval` until `shutdown`.
pub async fn run(
    endpoint: EndpointInnerRef,
    targets: BTreeSet<String>,
    health: Arc<OperatorHealth>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for uri in &targets {
            let (endpoint, health, uri) = (endpoint.clone(), health.clone(), uri.clone());
            tokio::spawn(async move {
                let answered = probe(&endpoint, &uri).await;
                match health.record(&uri, answered) {
                    Some(HealthChange::WentDown) => {
                        warn!(operator = %uri, "operator does not answer OPTIONS: marked down, hunt lists skip it")
                    }
                    Some(HealthChange::CameBack) => {
                        info!(operator = %uri, "operator answers OPTIONS again: back in hunt lists")
                    }
                    None => {}
                }
            });
        }
    }
}

/// What [`udp_refusal`] sends: a keep-alive of empty lines (RFC 5626 §4.4.1),
/// which SIP parsers skip (RFC 3261 §7.5).
const UDP_PROBE: &[u8] = b"\r\n\r\n";
/// Probes sent before giving up on a verdict (an ICMP error may be lost or rate-limited).
const UDP_PROBES: u32 = 3;

/// Whether nobody listens on UDP at `target`, as far as the kernel can tell.
///
/// rsipstack sends the INVITE from the switchboard's one shared, unconnected
/// UDP socket, and Linux does not report ICMP errors to such a socket: an
/// INVITE to a closed port is retransmitted until the ring timeout. So after
/// `first_after` (a live target has usually answered by then, and then is not
/// probed) a socket *connected* to the target sends a keep-alive, again every
/// `interval`, up to three times; for a connected socket an ICMP port (or
/// host, network) unreachable comes back as an error of the next send or
/// receive. Returns that error; None when the target answered the probe or
/// no verdict came (ICMP filtered): then the INVITE simply runs its course.
pub async fn udp_refusal(
    target: SocketAddr,
    first_after: Duration,
    interval: Duration,
) -> Option<std::io::Error> {
    tokio::time::sleep(first_after).await;
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(target).await.ok()?;
    let mut reply = [0u8; 64];
    for _ in 0..UDP_PROBES {
        if let Err(e) = socket.send(UDP_PROBE).await {
            return refusal(e);
        }
        match tokio::time::timeout(interval, socket.recv(&mut reply)).await {
            // Anything back (rsipstack, for one, answers a CRLF): someone listens.
            Ok(Ok(_)) => return None,
            Ok(Err(e)) => return refusal(e),
            Err(_) => {}
        }
    }
    None
}

/// `error` if it is the kernel reporting the target unreachable.
fn refusal(error: std::io::Error) -> Option<std::io::Error> {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
    .then_some(error)
}

/// Sends one OPTIONS; true when a final response came back (even 404 or 405
/// shows the device is alive). A 408 does not count: it is what the
/// transaction layer reports when nothing answered (and what a proxy says
/// when the phone behind it did not).
async fn probe(endpoint: &EndpointInnerRef, uri: &str) -> bool {
    let Ok(target) = Uri::try_from(uri) else {
        return false;
    };
    let Ok(via) = endpoint.get_via(None, None) else {
        return false;
    };
    let own = Uri::try_from(format!("sip:courtline@{}", via.uri.host_with_port).as_str())
        .unwrap_or_default();
    let from = typed::From {
        display_name: None,
        uri: own,
        params: vec![Param::Tag(make_tag())],
    };
    let to = typed::To {
        display_name: None,
        uri: target.clone(),
        params: vec![],
    };
    let request = endpoint.make_request(Method::Options, target, via, from, to, 1, None);
    let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
        return false;
    };
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    if tx.send().await.is_err() {
        return false;
    }
    while let Some(message) = tx.receive().await {
        if let SipMessage::Response(response) = message {
            if response.status_code.kind() != StatusCodeKind::Provisional {
                return response.status_code != StatusCode::RequestTimeout;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_two_misses_back_after_one_answer() {
        let health = OperatorHealth::default();
        assert_eq!(health.record("sip:a@h", false), None);
        assert!(!health.is_down("sip:a@h"));
        assert_eq!(
            health.record("sip:a@h", false),
            Some(HealthChange::WentDown)
        );
        assert!(health.is_down("sip:a@h"));
        assert_eq!(health.record("sip:a@h", false), None, "logged once");
        assert_eq!(health.record("sip:a@h", true), Some(HealthChange::CameBack));
        assert!(!health.is_down("sip:a@h"));
        assert_eq!(health.record("sip:a@h", true), None);
    }

    #[tokio::test]
    async fn a_closed_udp_port_is_refused_and_a_listening_one_is_not() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let wait = Duration::from_millis(200);
        let refused = udp_refusal(closed_addr, Duration::ZERO, wait).await;
        assert_eq!(
            refused.map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        // A port that takes the datagram but says nothing gives no verdict.
        let open = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let verdict = udp_refusal(open.local_addr().unwrap(), Duration::ZERO, wait).await;
        assert!(verdict.is_none());
        let mut buf = [0u8; 16];
        let (n, _) = open.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], UDP_PROBE);
    }

    #[test]
    fn hunt_list_skips_down_targets_but_never_empties() {
        let health = OperatorHealth::default();
        let list = vec!["sip:a@h".to_string(), "sip:b@h".to_string()];
        health.record("sip:a@h", false);
        health.record("sip:a@h", false);
        assert_eq!(health.hunt_list(&list), vec!["sip:b@h".to_string()]);
        health.record("sip:b@h", false);
        health.record("sip:b@h", false);
        assert_eq!(health.hunt_list(&list), list);
    }
}
