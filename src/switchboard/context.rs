//! The endpoint context: what the accept loop ([`super::endpoint`]) and every
//! call task ([`super::call::session`]) share while the switchboard runs. It sits
//! below both, so neither imports the other for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rsipstack::dialog::dialog_layer::DialogLayer;
use tokio_util::sync::CancellationToken;

use super::delivery::history::CallerHistoryLookup;
use super::delivery::sender::RecordSender;
use super::live::LiveConfig;
use super::media::ports::RtpPorts;
use super::media::recording::Recorder;
use super::media::tone::ToneFrames;
use super::metrics::Metrics;
use super::sip::arrivals::SetupArrivals;
use super::sip::caller_invites::CallerInvites;
use super::sip::dialog_states::DialogStateRouter;
use super::sip::forwarded::TrustedProxies;
use super::sip::inbound_auth::InboundAuth;
use super::sip::probe_header::ProbeKey;
use super::sip::qualify::OperatorHealth;
use crate::contract::pb::CallRecord;

/// Everything calls share while the switchboard runs; only the configuration in
/// force changes (by reload), and each call keeps the one it was admitted with.
pub(crate) struct Shared {
    /// The configuration and playlists in force; a reload swaps the whole `Arc`.
    pub live: RwLock<Arc<LiveConfig>>,
    /// Held while a reload is decided and applied, so reloads do not overlap.
    pub reloading: tokio::sync::Mutex<()>,
    /// Pre-encoded ringback.
    pub ringback: Arc<ToneFrames>,
    /// RTP port range.
    pub ports: RtpPorts,
    /// Where finished call records go.
    pub records: RecordSender,
    /// Asks the records service for a caller's history (`whisper_history` lines).
    pub history: CallerHistoryLookup,
    /// Writes call audio, when a line records it.
    pub recorder: Option<Recorder>,
    /// rsipstack's dialog table.
    pub dialog_layer: Arc<DialogLayer>,
    /// Routes every dialog's state events to the call that owns it.
    pub dialog_states: DialogStateRouter,
    /// Routes caller dialogs' answers to their INVITE transactions.
    pub caller_invites: CallerInvites,
    /// Address the SIP socket is bound to (UDP, and TCP when enabled).
    pub sip_addr: SocketAddr,
    /// Where SIP over TLS listens, if enabled.
    pub tls_addr: Option<SocketAddr>,
    /// Port peers reach us at when behind a NAT that maps it (`[sip] public_address`).
    pub public_port: Option<u16>,
    /// `[media] advertise_address`, parsed.
    pub advertise: Option<IpAddr>,
    /// Calls in progress, for `max_calls`.
    pub active: Arc<AtomicUsize>,
    /// Which operator targets answer OPTIONS.
    pub health: Arc<OperatorHealth>,
    /// Where each `round_robin` line's next hunt starts.
    pub hunt_turns: HuntTurns,
    /// Digest authentication of untrusted callers, when configured.
    pub inbound_auth: Option<InboundAuth>,
    /// What a synthetic probe's header must be signed with to count as one.
    pub probe_key: ProbeKey,
    /// `[sip] trusted_proxies`: whose `X-Orig-IP` names the caller.
    pub proxies: TrustedProxies,
    /// Cancelled on shutdown; every call task watches a child of it.
    pub shutdown: CancellationToken,
    /// Set on SIGTERM: new calls (and OPTIONS) are answered 503 while calls in progress finish.
    pub draining: Arc<AtomicBool>,
    /// When each new call's INVITE was read off the UDP socket (`[sip] max_setup_wait_ms`).
    pub arrivals: Arc<SetupArrivals>,
    /// The `courtline_*` metrics.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The configuration in force now: what a call admitted now keeps to its end.
    pub fn live(&self) -> Arc<LiveConfig> {
        self.live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `live` in force for calls admitted from now on; returns the one it replaces.
    pub fn replace_live(&self, live: Arc<LiveConfig>) -> Arc<LiveConfig> {
        let mut current = self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *current, live)
    }

    /// A call ended or was refused: counts it and queues its final record.
    pub fn record_ended(&self, record: CallRecord) {
        self.metrics.call_ended(&record);
        self.records.send(record);
    }

    /// Whether the switchboard is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether `max_calls` calls are up, so a new one would get 503.
    pub fn full(&self) -> bool {
        self.active.load(Ordering::Acquire) >= self.live().config.sip.max_calls
    }
}

/// How many calls each `round_robin` line has had, so the next one starts its
/// hunt one target further on. Kept while the switchboard runs (a restart
/// starts again at the first target).
#[derive(Debug, Default)]
pub struct HuntTurns {
    /// Calls so far, by line number.
    turns: Mutex<HashMap<String, u64>>,
}

impl HuntTurns {
    /// This call's turn on `line` (0 for its first), counting it.
    pub fn take(&self, line: &str) -> u64 {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let turn = turns.entry(line.to_owned()).or_default();
        let this = *turn;
        *turn = turn.wrapping_add(1);
        this
    }
}

/// One unit of `max_calls`, given back when the call task ends (even by panic).
#[derive(Debug)]
pub struct CallSlot {
    /// The switchboard's count of calls in progress.
    active: Arc<AtomicUsize>,
}

impl CallSlot {
    /// Takes a slot unless `max` calls are already up.
    pub fn take(active: &Arc<AtomicUsize>, max: usize) -> Option<CallSlot> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| CallSlot {
                active: active.clone(),
            })
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunt_turns_count_per_line() {
        let turns = HuntTurns::default();
        assert_eq!(turns.take("1"), 0);
        assert_eq!(turns.take("1"), 1);
        assert_eq!(turns.take("2"), 0);
        assert_eq!(turns.take("1"), 2);
    }

    #[test]
    fn slots_cap_calls_and_come_back() {
        let active = Arc::new(AtomicUsize::new(0));
        let a = CallSlot::take(&active, 2).unwrap();
        let _b = CallSlot::take(&active, 2).unwrap();
        assert!(CallSlot::take(&active, 2).is_none());
        drop(a);
        assert!(CallSlot::take(&active, 2).is_some());
    }
}
