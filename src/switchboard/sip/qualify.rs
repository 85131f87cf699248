//! OPTIONS keep-alive ("qualify") toward operator targets.
//!
//! An operator phone that was unplugged makes every caller wait through a
//! ring timeout before the hunt list moves on. courtline pings each operator
//! target with OPTIONS; one that stops answering is marked down and skipped
//! by the hunt list until it answers again.

use std::collections::{BTreeSet, HashMap};
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
    /// whole list is kept (trying beats refusing the caller outright).
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
