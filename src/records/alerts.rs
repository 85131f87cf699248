//! Pattern alerts: the configured rules (`[[records.patterns.rules]]`) evaluated as
//! calls are recorded, and the optional webhook to a court's case-management system.
//!
//! The ledger announces each finished call after the commit that stored it
//! ([`crate::records::ledger::patterns`]); [`run_alerts`] evaluates every rule for
//! that call's caller over the window ending on the call's day (the same search as
//! `ListPatterns`, for one caller), and chains a `PatternMatched` event per match
//! (at most one per rule, caller and UTC day). It sweeps every caller of the rules'
//! windows at start and whenever announcements did not fit its queue, so a restart
//! or a burst loses no alert. Chained matches go to the webhook's own task over a
//! bounded queue: a slow or absent receiver never holds up ingest or evaluation.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::dashboard::day_of;
use super::ledger::patterns::FinishedCalls;
use super::ledger::{now_ms, Ledger};
use super::mask::DEFAULT_MASKED_ROLES;
use super::pattern_search::{search, search_caller};
use super::patterns::{kind_name, PatternQuery};
use super::store::CallQuery;
use crate::contract::pb::{PatternHit, PatternKind, PatternMatched, Role, SortOrder};

/// Most call ids a `PatternMatched` event lists.
const MAX_CALL_IDS: u32 = 100;
/// Chained matches waiting for the webhook: beyond this they are dropped (and logged);
/// the chain and the review queue have them all.
const WEBHOOK_QUEUE: usize = 1000;
/// Finished calls taken from the queue at once (one evaluation per caller among them).
const EVALUATION_BATCH: usize = 500;
/// How long one webhook attempt may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Header carrying the body's signature: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-courtline-signature";

/// One configured alert rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternRule {
    /// Its name, chained with each match and sent to the webhook.
    pub name: String,
    /// Which pattern.
    pub kind: PatternKind,
    /// At least this many ...
    pub threshold: u32,
    /// ... within this many UTC days.
    pub window_days: u32,
}

/// Where matches are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `http://host:port/path`.
    pub url: hyper::Uri,
    /// The HMAC-SHA256 key.
    pub secret: Vec<u8>,
    /// Attempts per match (the first and the retries), 1 s, 2 s, 4 s ... apart.
    pub attempts: u32,
}

/// The records service's pattern settings (`[records.patterns]`, and the roles of
/// `[records.web] mask_callers_for`, which `ListPatterns` masks numbers for too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSettings {
    /// Alert rules; none: no alerts.
    pub rules: Vec<PatternRule>,
    /// The webhook, if any.
    pub webhook: Option<Webhook>,
    /// Roles that see callers' numbers masked.
    pub masked_roles: Vec<Role>,
}

impl Default for PatternSettings {
    fn default() -> Self {
        PatternSettings {
            rules: Vec::new(),
            webhook: None,
            masked_roles: default_masked_roles(),
        }
    }
}

/// The default masked roles: `[records.web] mask_callers_for`'s default.
pub fn default_masked_roles() -> Vec<Role> {
    super::mask::masked_roles(&DEFAULT_MASKED_ROLES.map(String::from)).unwrap_or_default()
}

/// The rule's query for the window ending on `last_day`.
fn rule_query(rule: &PatternRule, last_day: i64) -> PatternQuery {
    PatternQuery {
        kind: rule.kind,
        threshold: rule.threshold,
        window_days: rule.window_days,
        first_day: last_day - i64::from(rule.window_days.max(1)) + 1,
        last_day,
    }
}

/// Evaluates the rules as the ledger announces finished calls, until the
/// announcements end (the ledger is dropped) or `stop` completes.
pub async fn run_alerts(
    ledger: Ledger,
    settings: PatternSettings,
    mut finished: FinishedCalls,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let webhook = settings.webhook.clone().map(|webhook| {
        let (sender, receiver) = mpsc::channel(WEBHOOK_QUEUE);
        tokio::spawn(run_webhook(webhook, receiver));
        sender
    });
    let alerts = Alerts {
        ledger,
        rules: settings.rules,
        webhook,
    };
    let today = day_of(now_ms());
    alerts.sweep(today, today).await;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            received = finished.receiver.recv_many(&mut batch, EVALUATION_BATCH) => {
                if received == 0 {
                    break;
                }
            }
            () = &mut stop => break,
        }
        if let Some((first_day, last_day)) = finished.take_overflow() {
            warn!(
                first_day,
                last_day,
                "pattern alerts fell behind ingest; looking at every caller of those days"
            );
            alerts.sweep(first_day, last_day).await;
        }
        let callers: BTreeSet<(String, i64, String)> = batch
            .into_iter()
            .map(|call| {
                (
                    call.caller_number,
                    day_of(call.received_at_ms),
                    call.call_id,
                )
            })
            .collect();
        let mut seen = BTreeSet::new();
        for (caller, day, call_id) in callers {
            if seen.insert((caller.clone(), day)) {
                alerts.evaluate(Some(&caller), day, day, &call_id).await;
            }
        }
    }
}

/// What the alert task works with.
struct Alerts {
    /// Where matches are chained, and the store read.
    ledger: Ledger,
    /// The rules.
    rules: Vec<PatternRule>,
    /// The webhook's queue, if there is one.
    webhook: Option<mpsc::Sender<(i64, PatternMatched)>>,
}

impl Alerts {
    /// Every rule, for every caller, over the windows that end from `first_day` to
    /// `last_day` (calls of those days may have made a match).
    async fn sweep(&self, first_day: i64, last_day: i64) {
        self.evaluate(None, first_day, last_day, "").await;
    }

    /// Every rule over the windows ending from `first_day` to `last_day`, for
    /// `caller` (or everyone), chaining each new match; failures are logged, the
    /// next call tries again.
    async fn evaluate(
        &self,
        caller: Option<&str>,
        first_day: i64,
        last_day: i64,
        trigger_call_id: &str,
    ) {
        let store = self.ledger.store().as_ref();
        let queries: Vec<PatternQuery> = self
            .rules
            .iter()
            .map(|rule| PatternQuery {
                first_day: rule_query(rule, first_day).first_day,
                ..rule_query(rule, last_day)
            })
            .collect();
        let found = match caller {
            Some(caller) => search_caller(store, &queries, caller).await,
            None => {
                let mut found = Vec::new();
                for query in &queries {
                    match search(store, query, None).await {
                        Ok(each) => found.push(each.hits),
                        Err(error) => {
                            warn!(%error, "could not sweep for pattern matches");
                            found.push(Vec::new());
                        }
                    }
                }
                Ok(found)
            }
        };
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                warn!(%error, "could not evaluate the pattern rules");
                return;
            }
        };
        for (rule, hits) in self.rules.iter().zip(found) {
            for hit in hits {
                if let Err(error) = self.chain(rule, hit, trigger_call_id).await {
                    warn!(rule = %rule.name, %error, "could not record a pattern match");
                }
            }
        }
    }

    /// Chains one match (unless it is a repeat of today's) and hands it to the webhook.
    async fn chain(
        &self,
        rule: &PatternRule,
        hit: PatternHit,
        trigger_call_id: &str,
    ) -> Result<(), super::ledger::LedgerError> {
        let query = CallQuery {
            filter: hit.calls_filter.clone().unwrap_or_default(),
            sort: SortOrder::OldestFirst,
            page_size: MAX_CALL_IDS,
            page_token: None,
        };
        let (calls, _) = self.ledger.store().list_calls(&query).await?;
        let matched = PatternMatched {
            rule: rule.name.clone(),
            threshold: i64::from(rule.threshold),
            window_days: rule.window_days,
            call_ids: calls.into_iter().map(|call| call.call_id).collect(),
            trigger_call_id: trigger_call_id.to_owned(),
            hit: Some(hit),
        };
        let Some(seq) = self.ledger.record_pattern_match(matched.clone()).await? else {
            return Ok(());
        };
        info!(rule = %rule.name, seq, "a pattern rule matched");
        if let Some(webhook) = &self.webhook {
            if webhook.try_send((seq, matched)).is_err() {
                warn!(seq, "the pattern webhook's queue is full; this match is on the chain and in the review queue only");
            }
        }
        Ok(())
    }
}

/// The JSON body posted for the match chained at `seq`.
pub fn webhook_body(seq: i64, matched: &PatternMatched, sent_at_ms: i64) -> String {
    let hit = matched.hit.clone().unwrap_or_default();
    serde_json::json!({
        "event": "pattern_matched",
        "seq": seq,
        "rule": matched.rule,
        "kind": kind_name(hit.kind()),
        "threshold": matched.threshold,
        "window_days": matched.window_days,
        "caller_number": hit.caller_number,
        "court_name": hit.court_name,
        "count": hit.count,
        "calls": hit.calls,
        "since_ms": hit.since_ms,
        "until_ms": hit.until_ms,
        "courts": hit.courts,
        "call_ids": matched.call_ids,
        "trigger_call_id": matched.trigger_call_id,
        "sent_at_ms": sent_at_ms,
    })
    .to_string()
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`, as the signature header carries it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC-SHA256 takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts each chained match, retrying with doubling waits; gives up (logged) after
/// the configured attempts: the match stays on the chain and in the review queue.
async fn run_webhook(webhook: Webhook, mut queue: mpsc::Receiver<(i64, PatternMatched)>) {
    while let Some((seq, matched)) = queue.recv().await {
        let body = webhook_body(seq, &matched, now_ms());
        let signed = signature(&webhook.secret, body.as_bytes());
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=webhook.attempts.max(1) {
            match tokio::time::timeout(WEBHOOK_TIMEOUT, post(&webhook.url, &body, &signed, seq))
                .await
            {
                Ok(Ok(())) => break,
                Ok(Err(problem)) => {
                    warn!(seq, attempt, url = %webhook.url, %problem, "pattern webhook failed")
                }
                Err(_) => warn!(seq, attempt, url = %webhook.url, "pattern webhook timed out"),
            }
            if attempt < webhook.attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

/// One POST of `body`; `Err` says what went wrong (connection, or a non-2xx status).
async fn post(url: &hyper::Uri, body: &str, signed: &str, seq: i64) -> Result<(), String> {
    let host = url.host().ok_or("the webhook URL has no host")?;
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake: {error}"))?;
    tokio::spawn(connection);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = hyper::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signed)
        .header("x-courtline-event", "pattern_matched")
        .header("x-courtline-delivery", seq.to_string())
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("request: {error}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_default_masked_roles_are_the_consoles() {
        assert_eq!(
            PatternSettings::default().masked_roles,
            default_masked_roles()
        );
    }

    #[test]
    fn a_rule_looks_at_the_window_ending_on_the_day() {
        let rule = PatternRule {
            name: "broker".into(),
            kind: PatternKind::Courts,
            threshold: 6,
            window_days: 3,
        };
        let query = rule_query(&rule, 100);
        assert_eq!((query.first_day, query.last_day), (98, 100));
        let body = webhook_body(7, &PatternMatched::default(), 5);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["seq"], 7);
        assert_eq!(json["event"], "pattern_matched");
    }
}
