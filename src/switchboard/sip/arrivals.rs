//! When each new call's INVITE arrived on the SIP socket (the kernel's
//! timestamp), so admission can tell how long it waited inside courtline
//! (`[sip] max_setup_wait_ms`).
//!
//! Under overload the wait grows in the stack's queue between the socket and
//! admission; answering such an INVITE with a 200 OK seconds late makes the
//! caller retransmit, and the retransmissions add to the queue. Admission
//! answers 503 instead (BENCHMARKS.md, "Shedding calls under overload").
//! The guard notes an INVITE when it reads it; admission takes the note. A
//! note nobody takes (a retransmission of an INVITE already admitted, or one
//! the stack dropped) is swept after [`KEEP`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::switchboard::burst::ShrinkAfterBurst;

/// How long a note is kept for admission to take: 64·T1 at the default T1,
/// the longest a UAC retransmits an INVITE.
pub const KEEP: Duration = Duration::from_secs(32);

/// Most notes kept at once: beyond it new INVITEs go unnoted (admission then
/// sees no wait) rather than growing the table under a flood the shield lets
/// through.
pub const MOST_NOTES: usize = 200_000;

/// How long after shedding a call OPTIONS keeps answering 503, so that a
/// load balancer's probe (Kamailio's dispatcher) sees the overload and moves
/// new calls to other nodes until a probe finds this one keeping up again.
pub const SHED_SIGNAL: Duration = Duration::from_secs(5);

/// How often the table is swept of notes older than [`KEEP`].
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Notes the table keeps room for however quiet it gets; a sweep after a
/// flood shrinks it towards this.
const NOTES_FLOOR: usize = 1024;

/// Arrival times of new INVITEs by their top Via branch (sans-IO: the caller
/// passes `now`).
#[derive(Debug)]
pub struct Arrivals {
    /// When each INVITE (by branch) was read.
    by_branch: HashMap<Box<str>, Instant>,
    /// When notes older than [`KEEP`] were last removed.
    swept: Instant,
}

impl Arrivals {
    /// An empty table at `now`.
    pub fn new(now: Instant) -> Arrivals {
        Arrivals {
            by_branch: HashMap::new(),
            swept: now,
        }
    }

    /// The INVITE with `branch` was read at `now`; a retransmission keeps the
    /// first reading.
    pub fn note(&mut self, branch: &str, now: Instant) {
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if self.by_branch.len() >= MOST_NOTES && !self.by_branch.contains_key(branch) {
            return;
        }
        self.by_branch.entry(branch.into()).or_insert(now);
    }

    /// When the INVITE with `branch` was read, if noted; forgets it.
    pub fn take(&mut self, branch: &str) -> Option<Instant> {
        self.by_branch.remove(branch)
    }

    /// Forgets notes older than [`KEEP`] and gives back the room a flood of
    /// them took. [`note`](Self::note) sweeps at most every second; a quiet
    /// switchboard sweeps on a timer ([`SetupArrivals::sweep`]).
    pub fn sweep(&mut self, now: Instant) {
        self.by_branch
            .retain(|_, read| now.saturating_duration_since(*read) < KEEP);
        self.by_branch.shrink_after_burst(NOTES_FLOOR);
        self.swept = now;
    }

    /// Notes kept.
    pub fn len(&self) -> usize {
        self.by_branch.len()
    }

    /// Whether no note is kept.
    pub fn is_empty(&self) -> bool {
        self.by_branch.is_empty()
    }
}

/// [`Arrivals`] shared by the UDP guard (notes) and admission (takes), with
/// the once-a-second gate for the overload warning.
#[derive(Debug)]
pub struct SetupArrivals {
    /// The table.
    table: Mutex<Arrivals>,
    /// Second (since `origin`) of the last overload warning, plus one; 0: none yet.
    warned_second: AtomicU64,
    /// Millisecond (since `origin`) of the last shed INVITE, plus one; 0: none yet.
    shed_ms: AtomicU64,
    /// Zero point for `warned_second`.
    origin: Instant,
}

impl Default for SetupArrivals {
    fn default() -> Self {
        let now = Instant::now();
        SetupArrivals {
            table: Mutex::new(Arrivals::new(now)),
            warned_second: AtomicU64::new(0),
            shed_ms: AtomicU64::new(0),
            origin: now,
        }
    }
}

impl SetupArrivals {
    /// The INVITE with `branch` was read just now, after `queued` in the
    /// socket's queue.
    pub fn note(&self, branch: &str, queued: Duration) {
        let now = Instant::now();
        let arrived = now.checked_sub(queued.min(KEEP)).unwrap_or(now);
        self.lock().note(branch, arrived);
    }

    /// When the INVITE with `branch` was read, if noted; forgets it.
    pub fn take(&self, branch: &str) -> Option<Instant> {
        self.lock().take(branch)
    }

    /// Sweeps the table now: run every [`KEEP`] by the endpoint, so that the
    /// notes of INVITEs the stack never passed on (an overload) do not stay
    /// until the next call.
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    /// An INVITE was just shed.
    pub fn shed(&self) {
        self.shed_ms.store(
            self.origin.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
    }

    /// Whether an INVITE was shed within the last [`SHED_SIGNAL`].
    pub fn shedding(&self) -> bool {
        match self.shed_ms.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let since = Duration::from_millis(at - 1);
                self.origin.elapsed().saturating_sub(since) < SHED_SIGNAL
            }
        }
    }

    /// Whether an overload warning may be logged now: once a second at most,
    /// so that shedding thousands of calls a second does not also flood the log.
    pub fn may_warn(&self) -> bool {
        let second = self.origin.elapsed().as_secs() + 1;
        self.warned_second.swap(second, Ordering::Relaxed) != second
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The top Via branch of `datagram` if it is an INVITE outside a dialog (no
/// To tag): a new call. Reads only the start line and the Via and To headers
/// (full or compact names), which the guard has already checked.
pub fn new_call_branch(datagram: &[u8]) -> Option<&str> {
    if !datagram.starts_with(b"INVITE ") {
        return None;
    }
    // The body may be anything; the head is what comes before the first blank line.
    let head_end = datagram
        .windows(2)
        .position(|w| w == b"\n\n" || w == b"\n\r")
        .unwrap_or(datagram.len());
    let head = std::str::from_utf8(&datagram[..head_end]).ok()?;
    // The top Via's branch: `None` inside until the first Via is read.
    let mut branch: Option<Option<&str>> = None;
    // `lines` takes CRLF and the bare LF the guard tolerates alike.
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if branch.is_none() && (name.eq_ignore_ascii_case("via") || name == "v") {
            branch = Some(top_branch(value));
        } else if (name.eq_ignore_ascii_case("to") || name == "t")
            && value
                .split(';')
                .skip(1)
                .any(|param| param.trim().to_ascii_lowercase().starts_with("tag="))
        {
            return None;
        }
    }
    branch.flatten()
}

/// The branch of the first Via in a Via header's value (several may share one
/// line, comma-separated): what admission looks a note up by.
pub fn top_branch(via: &str) -> Option<&str> {
    let top = via.split(',').next().unwrap_or("");
    top.split(';')
        .skip(1)
        .find_map(|param| {
            let (key, value) = param.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("branch")
                .then(|| value.trim())
        })
        .filter(|branch| !branch.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:02112368@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-1;rport\r\n\
        Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK-proxy\r\n\
        From: <sip:caller@127.0.0.2>;tag=a\r\n\
        To: <sip:02112368@127.0.0.1>\r\n\
        Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_new_call_is_known_by_its_top_branch() {
        assert_eq!(new_call_branch(INVITE.as_bytes()), Some("z9hG4bK-1"));
        let compact = INVITE.replace("Via: ", "v: ").replace("To: ", "t: ");
        assert_eq!(new_call_branch(compact.as_bytes()), Some("z9hG4bK-1"));
    }

    #[test]
    fn re_invites_other_requests_and_responses_are_not_new_calls() {
        let re_invite = INVITE.replace(
            "To: <sip:02112368@127.0.0.1>",
            "To: <sip:02112368@127.0.0.1>;tag=b",
        );
        assert_eq!(new_call_branch(re_invite.as_bytes()), None);
        let bye = INVITE.replacen("INVITE sip", "BYE sip", 1);
        assert_eq!(new_call_branch(bye.as_bytes()), None);
        assert_eq!(new_call_branch(b"SIP/2.0 200 OK\r\n\r\n"), None);
        let no_branch = INVITE.replace(";branch=z9hG4bK-1", "");
        assert_eq!(new_call_branch(no_branch.as_bytes()), None);
    }

    #[test]
    fn admission_takes_the_first_reading_once() {
        let t0 = Instant::now();
        let mut arrivals = Arrivals::new(t0);
        arrivals.note("b1", t0);
        // A retransmission half a second later keeps the first reading.
        arrivals.note("b1", t0 + Duration::from_millis(500));
        assert_eq!(arrivals.take("b1"), Some(t0));
        assert_eq!(arrivals.take("b1"), None);
    }

    #[test]
    fn notes_nobody_takes_are_swept_after_keep() {
        let t0 = Instant::now();
        let mut arrivals = Arrivals::new(t0);
        arrivals.note("old", t0);
        arrivals.note("young", t0 + KEEP - Duration::from_secs(1));
        arrivals.note("new", t0 + KEEP + Duration::from_millis(1));
        assert_eq!(arrivals.len(), 2);
        assert_eq!(arrivals.take("old"), None);
        assert!(arrivals.take("young").is_some());
    }

    #[test]
    fn a_sweep_after_a_flood_gives_back_the_room_it_took() {
        let t0 = Instant::now();
        let mut arrivals = Arrivals::new(t0);
        for i in 0..50_000 {
            arrivals.note(&i.to_string(), t0);
        }
        let flooded = arrivals.by_branch.capacity();
        // Nothing is due yet: the flood's notes stay.
        arrivals.sweep(t0 + KEEP - Duration::from_millis(1));
        assert_eq!(arrivals.len(), 50_000);
        arrivals.sweep(t0 + KEEP);
        assert!(arrivals.is_empty());
        let swept = arrivals.by_branch.capacity();
        assert!(
            swept < flooded / 8,
            "capacity {swept} after the sweep, {flooded} in the flood"
        );
        arrivals.note("after", t0 + KEEP + Duration::from_millis(1));
        assert!(arrivals.take("after").is_some());
    }

    #[test]
    fn a_full_table_notes_nothing_more() {
        let t0 = Instant::now();
        let mut arrivals = Arrivals::new(t0);
        for i in 0..MOST_NOTES {
            arrivals.note(&i.to_string(), t0);
        }
        arrivals.note("one more", t0);
        assert_eq!(arrivals.len(), MOST_NOTES);
        assert_eq!(arrivals.take("one more"), None);
    }

    #[test]
    fn shedding_is_signalled_from_the_first_shed_call() {
        let arrivals = SetupArrivals::default();
        assert!(!arrivals.shedding());
        arrivals.shed();
        assert!(arrivals.shedding());
    }

    #[test]
    fn the_overload_warning_is_let_through_once_a_second() {
        let arrivals = SetupArrivals::default();
        assert!(arrivals.may_warn());
        assert!(!arrivals.may_warn());
    }
}
