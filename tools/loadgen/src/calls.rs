//! The load generator's SIP side, on one thread: callers INVITE courtline at a
//! set rate up to a set concurrency, hold, and hang up (or the operators do);
//! operators answer courtline's INVITEs at once. All callers share one SIP
//! socket and all operators another; datagrams go in and out in batches.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::media::{realtime_ns, wait_readable, MediaOrder};
use super::sip::{response, sdp, Message, Request};
use super::stats::{Histogram, Summary};
use courtline::switchboard::media::batch::{RecvBatch, SendBatch};

/// RFC 3261 T1: first retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: longest retransmission interval for non-INVITE requests and 2xx.
const T2: Duration = Duration::from_secs(4);
/// RFC 3261 64·T1: when a transaction gives up.
const GIVE_UP: Duration = Duration::from_secs(32);
/// How long an operator leg may stay up after the caller leg ended.
const LEG_LINGER: Duration = Duration::from_secs(5);
/// Line number every call dials.
pub const LINE: &str = "02112368";
/// Prefix of caller numbers; the call index follows, so operator legs can be matched.
const CALLER_PREFIX: &str = "139";

/// Who ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Hangup {
    /// The caller sends BYE after the hold time.
    Caller,
    /// The operator sends BYE after the hold time (counted from the caller's ACK).
    Operator,
}

/// What calls to place.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Calls in total.
    pub calls: u32,
    /// New calls per second.
    pub rate: f64,
    /// Calls up at once, at most.
    pub concurrency: u32,
    /// Time from the caller's ACK to the hang-up.
    pub hold: Duration,
    /// Who hangs up.
    pub hangup: Hangup,
    /// Whether bridged legs send audio (relay load).
    pub talk: bool,
    /// Payload type offered and sent (0 PCMU, 8 PCMA).
    pub payload_type: u8,
    /// Hard stop for the whole run.
    pub deadline: Instant,
}

/// Live counts for the monitor.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Caller legs answered and not yet ended.
    pub up: AtomicU32,
    /// Operator legs answered and not yet ended.
    pub bridged: AtomicU32,
}

/// SIP-side results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallsReport {
    /// INVITEs placed.
    pub attempted: u64,
    /// Calls that went through their whole plan.
    pub completed: u64,
    /// Calls that failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Calls still running when the run's time limit hit.
    pub unfinished: u64,
    /// Calls whose operator leg was answered.
    pub bridged: u64,
    /// Retransmissions received from courtline (repeated 200 OK, INVITE or BYE).
    pub retransmissions_received: u64,
    /// Retransmissions the load generator had to send.
    pub retransmissions_sent: u64,
    /// INVITE to 200 OK.
    pub setup_time: Summary,
    /// Seconds from the first INVITE to the last.
    pub placing_seconds: f64,
    /// INVITEs per second over `placing_seconds`.
    pub achieved_cps: f64,
}

/// A request or response the load generator repeats until it is answered.
#[derive(Debug)]
struct Retransmit {
    /// The message.
    text: String,
    /// Where to.
    to: SocketAddr,
    /// Which socket: the callers' or the operators'.
    from_operator: bool,
    /// Next repetition.
    next: Instant,
    /// Current interval.
    interval: Duration,
    /// Longest interval (T2, or unbounded doubling for INVITE).
    cap: Duration,
    /// Give up then.
    give_up: Instant,
    /// Failure reason when giving up.
    reason: &'static str,
}

/// Where a caller leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerState {
    /// INVITE sent, no final response.
    Inviting,
    /// Answered and ACKed.
    Up,
    /// BYE sent.
    Ending,
    /// Over.
    Ended,
}

/// The operator side of one call.
#[derive(Debug)]
struct OperatorLeg {
    /// Courtline's Call-ID for the operator dialog.
    call_id: String,
    /// Our 200 OK, repeated when the INVITE is.
    ok: String,
    /// Courtline's SIP address.
    courtline: SocketAddr,
    /// Request-URI for our BYE (courtline's Contact).
    remote_uri: String,
    /// Our From for a BYE (their To plus our tag).
    local: String,
    /// Our To for a BYE (their From).
    remote: String,
    /// Answered and ACKed.
    acked: bool,
    /// BYE sent or received.
    ended: bool,
}

/// One call of the plan.
#[derive(Debug)]
struct Call {
    /// Caller leg state.
    state: CallerState,
    /// When the INVITE went out.
    invited: Instant,
    /// To header of the 200 OK (with courtline's tag).
    to: String,
    /// Request-URI for in-dialog requests.
    remote_uri: String,
    /// When to hang up.
    hangup_at: Option<Instant>,
    /// When the caller leg ended.
    ended_at: Option<Instant>,
    /// Message being retransmitted.
    retransmit: Option<Retransmit>,
    /// The operator leg, once courtline dialled it.
    operator: Option<OperatorLeg>,
    /// Failure, if any.
    failure: Option<String>,
    /// Counted in the totals.
    finished: bool,
}

/// The SIP thread.
pub struct CallDriver {
    /// Every caller's SIP socket.
    caller_sip: UdpSocket,
    /// Every operator's SIP socket.
    operator_sip: UdpSocket,
    /// Callers' shared RTP address (in every INVITE's SDP).
    caller_rtp: SocketAddr,
    /// Operators' shared RTP address (in every 200 OK's SDP).
    operator_rtp: SocketAddr,
    /// Courtline's SIP address.
    courtline: SocketAddr,
    /// Call-ID prefix unique to this run.
    run_id: String,
    /// The plan.
    plan: Plan,
    /// Calls by index.
    calls: Vec<Call>,
    /// Indices of calls not yet finished.
    live: Vec<u32>,
    /// Operator Call-ID → call index.
    operator_calls: HashMap<String, u32>,
    /// Orders for the media thread.
    media: mpsc::Sender<MediaOrder>,
    /// Live counts.
    gauges: Arc<Gauges>,
    /// Totals.
    report: CallsReport,
    /// INVITE → 200 OK.
    setup: Histogram,
    /// Outgoing datagrams on the callers' socket.
    caller_out: SendBatch,
    /// Outgoing datagrams on the operators' socket.
    operator_out: SendBatch,
}

impl CallDriver {
    /// A driver for `plan` against courtline at `courtline`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        caller_sip: UdpSocket,
        operator_sip: UdpSocket,
        caller_rtp: SocketAddr,
        operator_rtp: SocketAddr,
        courtline: SocketAddr,
        plan: Plan,
        media: mpsc::Sender<MediaOrder>,
        gauges: Arc<Gauges>,
    ) -> std::io::Result<CallDriver> {
        for s in [&caller_sip, &operator_sip] {
            courtline::switchboard::media::batch::set_buffer_sizes(s.as_raw_fd(), 16 << 20)?;
            s.set_nonblocking(true)?;
        }
        Ok(CallDriver {
            caller_sip,
            operator_sip,
            caller_rtp,
            operator_rtp,
            courtline,
            run_id: format!("lg{:08x}", rand::random::<u32>()),
            calls: Vec::with_capacity(plan.calls as usize),
            live: Vec::new(),
            operator_calls: HashMap::new(),
            plan,
            media,
            gauges,
            report: CallsReport::default(),
            setup: Histogram::new(),
            caller_out: SendBatch::new(64),
            operator_out: SendBatch::new(64),
        })
    }

    /// Places and carries the calls; returns when all are over or the deadline hits.
    pub fn run(mut self) -> CallsReport {
        let mut inbound = RecvBatch::new(64);
        let start = Instant::now();
        let mut last_invite = start;
        let mut last_timer_scan = start;
        loop {
            let now = Instant::now();
            if now >= self.plan.deadline {
                break;
            }
            let placed = self.calls.len() as u32;
            if placed == self.plan.calls && self.live.is_empty() {
                break;
            }
            // Place calls on schedule, as long as concurrency allows.
            while (self.calls.len() as u32) < self.plan.calls
                && (self.live.len() as u32) < self.plan.concurrency
            {
                let due = start
                    + Duration::from_secs_f64(self.calls.len() as f64 / self.plan.rate.max(0.001));
                if due > now {
                    break;
                }
                self.place(now);
                last_invite = now;
            }
            let mut busy = false;
            for from_operator in [false, true] {
                let fd = if from_operator {
                    self.operator_sip.as_raw_fd()
                } else {
                    self.caller_sip.as_raw_fd()
                };
                let n = inbound.recv(fd).unwrap_or(0);
                busy |= n > 0;
                for i in 0..n {
                    if let Some(p) = inbound.get(i) {
                        if let Some(msg) = Message::parse(p.data) {
                            if from_operator {
                                self.on_operator_message(&msg, p.from, now);
                            } else {
                                self.on_caller_message(&msg, now);
                            }
                        }
                    }
                }
            }
            if now.duration_since(last_timer_scan) >= Duration::from_millis(1) {
                last_timer_scan = now;
                self.run_timers(now);
            }
            self.flush();
            if !busy {
                wait_readable(
                    &[self.caller_sip.as_raw_fd(), self.operator_sip.as_raw_fd()],
                    Duration::from_millis(1),
                );
            }
        }
        for call in self.live.clone() {
            if let Some(c) = self.calls.get_mut(call as usize) {
                c.finished = true;
            }
            self.report.unfinished += 1;
            let _ = self.media.send(MediaOrder::Forget { call });
        }
        self.report.attempted = self.calls.len() as u64;
        self.report.setup_time = self.setup.summary();
        self.report.placing_seconds = last_invite.duration_since(start).as_secs_f64();
        self.report.achieved_cps = if self.report.placing_seconds > 0.0 {
            (self.report.attempted.saturating_sub(1)) as f64 / self.report.placing_seconds
        } else {
            0.0
        };
        self.report
    }

    fn caller_sip_addr(&self) -> SocketAddr {
        self.caller_sip.local_addr().unwrap_or(self.caller_rtp)
    }

    fn operator_sip_addr(&self) -> SocketAddr {
        self.operator_sip.local_addr().unwrap_or(self.operator_rtp)
    }

    fn call_id(&self, call: u32) -> String {
        format!("{}-{call}", self.run_id)
    }

    fn caller_from(&self, call: u32) -> String {
        format!(
            "<sip:{CALLER_PREFIX}{call:08}@{}>;tag=c{call}",
            self.caller_sip_addr().ip()
        )
    }

    fn place(&mut self, now: Instant) {
        let call = self.calls.len() as u32;
        let body = sdp(self.caller_rtp, &[self.plan.payload_type]);
        let uri = format!("sip:{LINE}@{}", self.courtline);
        let text = Request {
            method: "INVITE",
            uri: &uri,
            via_host: self.caller_sip_addr(),
            branch: &format!("z9hG4bK-{}-{call}-i", self.run_id),
            from: &self.caller_from(call),
            to: &format!("<{uri}>"),
            call_id: &self.call_id(call),
            cseq: 1,
            sdp: Some(&body),
        }
        .render();
        self.send(false, self.courtline, &text);
        self.calls.push(Call {
            state: CallerState::Inviting,
            invited: now,
            to: String::new(),
            remote_uri: uri,
            hangup_at: None,
            ended_at: None,
            retransmit: Some(Retransmit {
                text,
                to: self.courtline,
                from_operator: false,
                next: now + T1,
                interval: T1,
                cap: GIVE_UP,
                give_up: now + GIVE_UP,
                reason: "no final response to INVITE",
            }),
            operator: None,
            failure: None,
            finished: false,
        });
        self.live.push(call);
    }

    fn on_caller_message(&mut self, msg: &Message<'_>, now: Instant) {
        let Some(call) = msg
            .header("Call-ID")
            .and_then(|id| id.strip_prefix(self.run_id.as_str()))
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return;
        };
        let Some(c) = self.calls.get(call as usize) else {
            return;
        };
        match (msg.status(), msg.method(), msg.cseq_method()) {
            (Some(status), _, Some("INVITE")) => self.on_invite_response(call, status, msg, now),
            (Some(status), _, Some("BYE")) if c.state == CallerState::Ending => {
                let c = &mut self.calls[call as usize];
                c.retransmit = None;
                c.state = CallerState::Ended;
                c.ended_at = Some(now);
                self.gauges.up.fetch_sub(1, Ordering::Relaxed);
                if status >= 300 {
                    c.failure = Some(format!("BYE answered {status}"));
                }
            }
            (None, Some("BYE"), _) => {
                let ok = response(msg, "200 OK", "x", self.caller_sip_addr(), None);
                self.send(false, self.courtline, &ok);
                let hangup = self.plan.hangup;
                let c = &mut self.calls[call as usize];
                match c.state {
                    CallerState::Up | CallerState::Ending => {
                        if c.state == CallerState::Up && hangup == Hangup::Caller {
                            c.failure = Some("courtline hung up the caller early".into());
                        }
                        c.state = CallerState::Ended;
                        c.ended_at = Some(now);
                        c.retransmit = None;
                        self.gauges.up.fetch_sub(1, Ordering::Relaxed);
                    }
                    CallerState::Ended => self.report.retransmissions_received += 1,
                    CallerState::Inviting => {}
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, call: u32, status: u16, msg: &Message<'_>, now: Instant) {
        let c = &mut self.calls[call as usize];
        if status < 200 {
            if c.state == CallerState::Inviting {
                // A provisional response stops INVITE retransmissions (Timer A).
                if let Some(r) = &mut c.retransmit {
                    r.next = r.give_up;
                }
            }
            return;
        }
        let to = msg.header("To").unwrap_or("").to_string();
        if status >= 300 {
            // ACK the failure on the INVITE's branch.
            let ack = Request {
                method: "ACK",
                uri: &c.remote_uri,
                via_host: self.caller_sip.local_addr().unwrap_or(self.caller_rtp),
                branch: &format!("z9hG4bK-{}-{call}-i", self.run_id),
                from: &format!(
                    "<sip:{CALLER_PREFIX}{call:08}@{}>;tag=c{call}",
                    self.caller_rtp.ip()
                ),
                to: &to,
                call_id: &format!("{}-{call}", self.run_id),
                cseq: 1,
                sdp: None,
            }
            .render();
            if c.state == CallerState::Inviting {
                c.state = CallerState::Ended;
                c.ended_at = Some(now);
                c.retransmit = None;
                c.failure = Some(format!("INVITE answered {status}"));
            }
            self.send(false, self.courtline, &ack);
            return;
        }
        let first = c.state == CallerState::Inviting;
        if first {
            let Some(rtp) = msg.sdp_rtp_addr() else {
                c.state = CallerState::Ended;
                c.ended_at = Some(now);
                c.failure = Some("200 OK without SDP".into());
                return;
            };
            c.to = to;
            c.remote_uri = msg
                .contact_uri()
                .map_or_else(|| c.remote_uri.clone(), str::to_string);
            c.retransmit = None;
            c.state = CallerState::Up;
            c.hangup_at = Some(now + self.plan.hold);
            self.setup
                .record_ns(now.duration_since(c.invited).as_nanos() as u64);
            self.gauges.up.fetch_add(1, Ordering::Relaxed);
            let _ = self.media.send(MediaOrder::WatchCaller {
                call,
                courtline: rtp,
                ack_ns: realtime_ns(),
            });
        } else {
            // courtline repeated its 200: our ACK was late or lost.
            self.report.retransmissions_received += 1;
        }
        let c = &self.calls[call as usize];
        let ack = Request {
            method: "ACK",
            uri: &c.remote_uri,
            via_host: self.caller_sip_addr(),
            branch: &format!("z9hG4bK-{}-{call}-a", self.run_id),
            from: &self.caller_from(call),
            to: &c.to,
            call_id: &self.call_id(call),
            cseq: 1,
            sdp: None,
        }
        .render();
        self.send(false, self.courtline, &ack);
    }

    fn on_operator_message(&mut self, msg: &Message<'_>, from: SocketAddr, now: Instant) {
        let Some(call_id) = msg.header("Call-ID") else {
            return;
        };
        let known = self.operator_calls.get(call_id).copied();
        match (msg.method(), known) {
            (Some("INVITE"), None) => {
                let Some(call) = msg
                    .from_user()
                    .and_then(|u| u.strip_prefix(CALLER_PREFIX))
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|&c| (c as usize) < self.calls.len())
                else {
                    let busy = response(msg, "486 Busy Here", "x", self.operator_sip_addr(), None);
                    self.send(true, from, &busy);
                    return;
                };
                let Some(rtp) = msg.sdp_rtp_addr() else {
                    let bad = response(
                        msg,
                        "488 Not Acceptable Here",
                        "x",
                        self.operator_sip_addr(),
                        None,
                    );
                    self.send(true, from, &bad);
                    return;
                };
                let body = sdp(self.operator_rtp, &[self.plan.payload_type]);
                let tag = format!("op{call}");
                let ok = response(msg, "200 OK", &tag, self.operator_sip_addr(), Some(&body));
                self.send(true, from, &ok);
                let local = format!("{};tag={tag}", msg.header("To").unwrap_or(""));
                let leg = OperatorLeg {
                    call_id: call_id.to_string(),
                    ok: ok.clone(),
                    courtline: from,
                    remote_uri: msg
                        .contact_uri()
                        .map_or_else(|| format!("sip:{from}"), str::to_string),
                    local,
                    remote: msg.header("From").unwrap_or("").to_string(),
                    acked: false,
                    ended: false,
                };
                self.operator_calls.insert(call_id.to_string(), call);
                let _ = self.media.send(MediaOrder::WatchOperator {
                    call,
                    courtline: rtp,
                });
                let c = &mut self.calls[call as usize];
                c.operator = Some(leg);
                if c.retransmit.is_none() {
                    c.retransmit = Some(Retransmit {
                        text: ok,
                        to: from,
                        from_operator: true,
                        next: now + T1,
                        interval: T1,
                        cap: T2,
                        give_up: now + GIVE_UP,
                        reason: "operator's 200 OK never ACKed",
                    });
                }
            }
            (Some("INVITE"), Some(call)) => {
                self.report.retransmissions_received += 1;
                if let Some(ok) = self.calls[call as usize]
                    .operator
                    .as_ref()
                    .map(|o| o.ok.clone())
                {
                    self.send(true, from, &ok);
                }
            }
            (Some("ACK"), Some(call)) => {
                let talk = self.plan.talk;
                let c = &mut self.calls[call as usize];
                if let Some(op) = &mut c.operator {
                    if !op.acked {
                        op.acked = true;
                        self.report.bridged += 1;
                        self.gauges.bridged.fetch_add(1, Ordering::Relaxed);
                        if c.retransmit.as_ref().is_some_and(|r| r.from_operator) {
                            c.retransmit = None;
                        }
                        if talk {
                            let _ = self.media.send(MediaOrder::Talk { call });
                        }
                    }
                }
            }
            (Some("BYE") | Some("CANCEL"), Some(call)) => {
                let ok = response(msg, "200 OK", "x", self.operator_sip_addr(), None);
                self.send(true, from, &ok);
                let c = &mut self.calls[call as usize];
                if let Some(op) = &mut c.operator {
                    if op.ended {
                        self.report.retransmissions_received += 1;
                    } else {
                        op.ended = true;
                        if op.acked {
                            self.gauges.bridged.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            (None, Some(call)) if msg.cseq_method() == Some("BYE") => {
                let c = &mut self.calls[call as usize];
                if c.retransmit.as_ref().is_some_and(|r| r.from_operator) {
                    c.retransmit = None;
                }
            }
            _ => {}
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.live.len() {
            let call = self.live[i];
            self.call_timers(call, now);
            let c = &self.calls[call as usize];
            let operator_done = c.operator.as_ref().is_none_or(|o| o.ended);
            let over = c.state == CallerState::Ended
                && (operator_done
                    || c.ended_at
                        .is_some_and(|t| now.duration_since(t) > LEG_LINGER));
            if over {
                let c = &mut self.calls[call as usize];
                if !operator_done && c.failure.is_none() {
                    c.failure = Some("operator leg not hung up".into());
                }
                c.finished = true;
                match c.failure.take() {
                    Some(reason) => *self.report.failed.entry(reason).or_default() += 1,
                    None => self.report.completed += 1,
                }
                if let Some(op) = &c.operator {
                    self.operator_calls.remove(&op.call_id);
                }
                c.operator = None;
                let _ = self.media.send(MediaOrder::Forget { call });
                self.live.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn call_timers(&mut self, call: u32, now: Instant) {
        let c = &mut self.calls[call as usize];
        if let Some(r) = &mut c.retransmit {
            if now >= r.give_up {
                let reason = r.reason;
                c.retransmit = None;
                c.failure.get_or_insert_with(|| reason.to_string());
                if c.state != CallerState::Ended {
                    if matches!(c.state, CallerState::Up | CallerState::Ending) {
                        self.gauges.up.fetch_sub(1, Ordering::Relaxed);
                    }
                    c.state = CallerState::Ended;
                    c.ended_at = Some(now);
                }
                if let Some(op) = &mut c.operator {
                    op.ended = true;
                }
            } else if now >= r.next {
                r.interval = (r.interval * 2).min(r.cap);
                r.next = now + r.interval;
                let (text, to, from_operator) = (r.text.clone(), r.to, r.from_operator);
                self.report.retransmissions_sent += 1;
                self.send(from_operator, to, &text);
                return;
            }
        }
        let c = &self.calls[call as usize];
        if c.hangup_at.is_none_or(|t| now < t) || c.state != CallerState::Up {
            return;
        }
        let operator_up = c.operator.as_ref().is_some_and(|o| o.acked && !o.ended);
        if self.plan.hangup == Hangup::Operator && operator_up {
            self.operator_bye(call, now);
        } else if self.plan.hangup == Hangup::Caller || !operator_up {
            self.caller_bye(call, now);
        }
    }

    fn caller_bye(&mut self, call: u32, now: Instant) {
        let c = &self.calls[call as usize];
        let text = Request {
            method: "BYE",
            uri: &c.remote_uri,
            via_host: self.caller_sip_addr(),
            branch: &format!("z9hG4bK-{}-{call}-b", self.run_id),
            from: &self.caller_from(call),
            to: &c.to,
            call_id: &self.call_id(call),
            cseq: 2,
            sdp: None,
        }
        .render();
        self.send(false, self.courtline, &text);
        let c = &mut self.calls[call as usize];
        c.state = CallerState::Ending;
        c.hangup_at = None;
        c.retransmit = Some(Retransmit {
            text,
            to: self.courtline,
            from_operator: false,
            next: now + T1,
            interval: T1,
            cap: T2,
            give_up: now + GIVE_UP,
            reason: "no response to the caller's BYE",
        });
    }

    fn operator_bye(&mut self, call: u32, now: Instant) {
        let via = self.operator_sip_addr();
        let c = &mut self.calls[call as usize];
        c.hangup_at = None;
        let Some(op) = &mut c.operator else {
            return;
        };
        let text = Request {
            method: "BYE",
            uri: &op.remote_uri,
            via_host: via,
            branch: &format!("z9hG4bK-{}-{call}-ob", self.run_id),
            from: &op.local,
            to: &op.remote,
            call_id: &op.call_id,
            cseq: 1,
            sdp: None,
        }
        .render();
        op.ended = true;
        self.gauges.bridged.fetch_sub(1, Ordering::Relaxed);
        let to = op.courtline;
        c.retransmit = Some(Retransmit {
            text: text.clone(),
            to,
            from_operator: true,
            next: now + T1,
            interval: T1,
            cap: T2,
            give_up: now + GIVE_UP,
            reason: "no response to the operator's BYE",
        });
        self.send(true, to, &text);
    }

    fn send(&mut self, from_operator: bool, to: SocketAddr, text: &str) {
        let (batch, fd) = if from_operator {
            (&mut self.operator_out, self.operator_sip.as_raw_fd())
        } else {
            (&mut self.caller_out, self.caller_sip.as_raw_fd())
        };
        if batch.is_full() {
            batch.flush(fd);
        }
        batch.push(to, |buf| {
            let n = text.len().min(buf.len());
            buf[..n].copy_from_slice(&text.as_bytes()[..n]);
            n
        });
    }

    fn flush(&mut self) {
        if !self.caller_out.is_empty() {
            self.caller_out.flush(self.caller_sip.as_raw_fd());
        }
        if !self.operator_out.is_empty() {
            self.operator_out.flush(self.operator_sip.as_raw_fd());
        }
    }
}
