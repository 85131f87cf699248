//! The switchboard's Prometheus metrics (`courtline_*`), served by the admin
//! endpoint's `/metrics`.
//!
//! Updated per event (a call's end, a phase change, a ban), never per packet:
//! RTP figures come from the call record at the call's end. State that other
//! parts keep anyway (spool backlog, qualify, the recording queue) is read into
//! gauges when scraped ([`Metrics::render`]). Labels are bounded by the
//! configuration (lines, operator targets, end reasons), never caller numbers.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::contract::exposition::{catch_up, text_of};
use crate::contract::names::end_reason_name;
use crate::contract::pb::{CallRecord, EndReason, LegMedia};

/// Operator answer times, seconds: a phone rings for a few seconds to a minute.
const ANSWER_BUCKETS: [f64; 11] = [1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0];
/// Interarrival jitter at a call's end, seconds: 1 ms (a LAN) to 200 ms (unusable).
const JITTER_BUCKETS: [f64; 9] = [0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];

/// What the switchboard reads at scrape time from the parts that keep it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Events spooled and not yet acknowledged by the records service.
    pub spool_depth: u64,
    /// Seconds the waiting events have waited for the service to make progress.
    pub delivery_lag_s: f64,
    /// Events the records service stored (its ingest of this switchboard's events).
    pub delivered: u64,
    /// Each operator target as configured, and whether qualify has it up.
    pub targets: Vec<(String, bool)>,
    /// Most messages ever queued at the recording writer (0 without recordings).
    pub recording_queue_peak: u64,
    /// Calls whose recording the writer's full queue made it drop.
    pub recordings_dropped: u64,
    /// Whether the switchboard is draining (SIGTERM received).
    pub draining: bool,
    /// Calls each media engine shard holds, by shard (empty until the first
    /// call starts the engine).
    pub media_shard_calls: Vec<usize>,
}

/// Every `courtline_*` metric of one switchboard, in its own registry.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` renders.
    registry: Registry,
    /// Calls by line and end reason (refusals included: `rejected`).
    calls: IntCounterVec,
    /// Calls in progress by phase.
    in_progress: IntGaugeVec,
    /// Calls whose warning started, by line.
    warnings_started: IntCounterVec,
    /// Calls whose warning was played to the end, by line.
    warnings_completed: IntCounterVec,
    /// Callers who hung up while the warning played, by line.
    warning_hangups: IntCounterVec,
    /// Seconds from dialling the operator to the answer, by line.
    operator_answer: HistogramVec,
    /// RTP packets by leg and direction, added at each call's end.
    rtp_packets: IntCounterVec,
    /// RTP packets lost on the way to courtline, by leg.
    rtp_lost: IntCounterVec,
    /// Interarrival jitter at the call's end, by leg.
    rtp_jitter: HistogramVec,
    /// Events spooled, not yet acknowledged.
    spool_depth: IntGauge,
    /// Seconds waiting events have waited for progress.
    delivery_lag: prometheus::Gauge,
    /// Events the records service stored.
    delivered: IntCounter,
    /// 1 while qualify has an operator target up, by target.
    target_up: IntGaugeVec,
    /// Sources the shield banned (floods, scanners).
    shield_bans: IntCounter,
    /// Most messages ever queued at the recording writer.
    recording_queue_peak: IntGauge,
    /// Calls whose recording was dropped because the writer's queue was full.
    recordings_dropped: IntCounter,
    /// Configuration reloads, by result: applied, or refused (bad file, restart needed).
    reloads: IntCounterVec,
    /// 1 while draining.
    draining: IntGauge,
    /// Calls each media engine shard holds now, by shard: whether the threads share the load.
    media_shard_calls: IntGaugeVec,
    /// 1 while courtline is registered with the PBX, by account and registrar.
    registration_up: IntGaugeVec,
    /// 1 when the line's last synthetic probe heard the right warning, by line.
    probe_success: IntGaugeVec,
    /// When the line's last synthetic probe ran (Unix seconds), by line.
    probe_last_run: prometheus::GaugeVec,
}

/// The phases a call in progress can be in, as [`crate::switchboard::call::flow::Phase::name`] names them.
const PHASES: [&str; 5] = [
    "ringing",
    "answering",
    "prompting",
    "dialing_operator",
    "bridged",
];

impl Metrics {
    /// Registers every metric (in a fresh registry, so tests can run many switchboards).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            calls: IntCounterVec::new(
                Opts::new("courtline_calls_total", "Calls ended, by line and end reason (refused INVITEs count as rejected)."),
                &["line", "end_reason"],
            )
            .expect("valid metric"),
            in_progress: IntGaugeVec::new(
                Opts::new("courtline_calls_in_progress", "Calls in progress, by phase."),
                &["phase"],
            )
            .expect("valid metric"),
            warnings_started: IntCounterVec::new(
                Opts::new("courtline_warning_started_total", "Calls whose warning started playing, by line."),
                &["line"],
            )
            .expect("valid metric"),
            warnings_completed: IntCounterVec::new(
                Opts::new("courtline_warning_completed_total", "Calls whose warning was played to the end, by line."),
                &["line"],
            )
            .expect("valid metric"),
            warning_hangups: IntCounterVec::new(
                Opts::new("courtline_warning_hangups_total", "Callers who hung up while the warning played, by line."),
                &["line"],
            )
            .expect("valid metric"),
            operator_answer: HistogramVec::new(
                HistogramOpts::new("courtline_operator_answer_seconds", "Time from dialling the operator to the answer, by line.")
                    .buckets(ANSWER_BUCKETS.to_vec()),
                &["line"],
            )
            .expect("valid metric"),
            rtp_packets: IntCounterVec::new(
                Opts::new("courtline_rtp_packets_total", "RTP packets of ended calls, by leg and direction (sent by or received by courtline)."),
                &["leg", "direction"],
            )
            .expect("valid metric"),
            rtp_lost: IntCounterVec::new(
                Opts::new("courtline_rtp_packets_lost_total", "RTP packets of ended calls that never reached courtline, by leg."),
                &["leg"],
            )
            .expect("valid metric"),
            rtp_jitter: HistogramVec::new(
                HistogramOpts::new("courtline_rtp_jitter_seconds", "Interarrival jitter (RFC 3550) at each call's end, by leg.")
                    .buckets(JITTER_BUCKETS.to_vec()),
                &["leg"],
            )
            .expect("valid metric"),
            spool_depth: IntGauge::new("courtline_records_spool_depth_events", "Call events spooled and not yet acknowledged by the records service.").expect("valid metric"),
            delivery_lag: prometheus::Gauge::new("courtline_records_delivery_lag_seconds", "Seconds waiting call events have waited for the records service to make progress (0 when none wait).").expect("valid metric"),
            delivered: IntCounter::new("courtline_records_events_delivered_total", "Call events the records service stored (its ingest from this switchboard).").expect("valid metric"),
            target_up: IntGaugeVec::new(
                Opts::new("courtline_operator_target_up", "1 while the operator target answers OPTIONS (qualify), 0 while marked down."),
                &["target"],
            )
            .expect("valid metric"),
            shield_bans: IntCounter::new("courtline_shield_bans_total", "Sources the SIP shield banned (floods, scanners).").expect("valid metric"),
            recording_queue_peak: IntGauge::new("courtline_recording_queue_peak_messages", "Most messages ever queued at the recording writer.").expect("valid metric"),
            recordings_dropped: IntCounter::new("courtline_recordings_dropped_total", "Calls whose recording was dropped because the recording writer's queue was full (the calls went on; their RecordingFinished says so).").expect("valid metric"),
            reloads: IntCounterVec::new(
                Opts::new("courtline_config_reloads_total", "Configuration reloads (SIGHUP, courtline reload), by result: applied or refused."),
                &["result"],
            )
            .expect("valid metric"),
            draining: IntGauge::new("courtline_draining", "1 while the switchboard drains (SIGTERM received): new calls are refused.").expect("valid metric"),
            media_shard_calls: IntGaugeVec::new(
                Opts::new("courtline_media_shard_calls", "Calls whose RTP each media engine thread ([media] threads) carries now, by shard."),
                &["shard"],
            )
            .expect("valid metric"),
            registration_up: IntGaugeVec::new(
                Opts::new("courtline_registration_up", "1 while courtline is registered with the PBX ([registration]), 0 while not."),
                &["account", "registrar"],
            )
            .expect("valid metric"),
            probe_success: IntGaugeVec::new(
                Opts::new("courtline_probe_success", "1 when the line's last synthetic probe heard the right warning, 0 when it failed."),
                &["line"],
            )
            .expect("valid metric"),
            probe_last_run: prometheus::GaugeVec::new(
                Opts::new("courtline_probe_last_run_timestamp_seconds", "When the line's last synthetic probe ran (Unix time)."),
                &["line"],
            )
            .expect("valid metric"),
            registry,
        };
        metrics.register_all();
        for phase in PHASES {
            metrics.in_progress.with_label_values(&[phase]).set(0);
        }
        for result in ["applied", "refused"] {
            metrics.reloads.with_label_values(&[result]).reset();
        }
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 22] = [
            Box::new(self.calls.clone()),
            Box::new(self.in_progress.clone()),
            Box::new(self.warnings_started.clone()),
            Box::new(self.warnings_completed.clone()),
            Box::new(self.warning_hangups.clone()),
            Box::new(self.operator_answer.clone()),
            Box::new(self.rtp_packets.clone()),
            Box::new(self.rtp_lost.clone()),
            Box::new(self.rtp_jitter.clone()),
            Box::new(self.spool_depth.clone()),
            Box::new(self.delivery_lag.clone()),
            Box::new(self.delivered.clone()),
            Box::new(self.target_up.clone()),
            Box::new(self.shield_bans.clone()),
            Box::new(self.recording_queue_peak.clone()),
            Box::new(self.recordings_dropped.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.draining.clone()),
            Box::new(self.media_shard_calls.clone()),
            Box::new(self.registration_up.clone()),
            Box::new(self.probe_success.clone()),
            Box::new(self.probe_last_run.clone()),
        ];
        for collector in collectors {
            // Names are fixed and distinct: registering cannot fail.
            self.registry
                .register(collector)
                .expect("distinct metric names");
        }
    }

    /// A reload was applied (`true`) or refused.
    pub fn config_reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// A call moved from phase `from` to `to` (`None`: not yet up, or ended).
    pub fn phase_changed(&self, from: Option<&str>, to: Option<&str>) {
        if let Some(from) = from {
            self.in_progress.with_label_values(&[from]).dec();
        }
        if let Some(to) = to {
            self.in_progress.with_label_values(&[to]).inc();
        }
    }

    /// A call ended (or was refused): counts it from its final record. A
    /// synthetic probe is not counted: it tests the line, nobody called.
    pub fn call_ended(&self, record: &CallRecord) {
        if record.probe {
            return;
        }
        let line = record.line_number.as_str();
        let reason = EndReason::try_from(record.end_reason).unwrap_or(EndReason::Unspecified);
        self.calls
            .with_label_values(&[line, end_reason_name(reason)])
            .inc();
        if record.prompt_started_at_ms != 0 {
            self.warnings_started.with_label_values(&[line]).inc();
        }
        if record.prompt_completed {
            self.warnings_completed.with_label_values(&[line]).inc();
        }
        if reason == EndReason::CallerHungUpDuringPrompt {
            self.warning_hangups.with_label_values(&[line]).inc();
        }
        // Dialling starts when the warning ends.
        if record.operator_answered_at_ms != 0 && record.prompt_ended_at_ms != 0 {
            let waited_ms = record.operator_answered_at_ms - record.prompt_ended_at_ms;
            self.operator_answer
                .with_label_values(&[line])
                .observe(waited_ms.max(0) as f64 / 1000.0);
        }
        for (leg, media) in [
            ("caller", &record.caller_media),
            ("operator", &record.operator_media),
        ] {
            if let Some(media) = media {
                self.leg_ended(leg, media);
            }
        }
    }

    fn leg_ended(&self, leg: &str, media: &LegMedia) {
        self.rtp_packets
            .with_label_values(&[leg, "sent"])
            .inc_by(media.packets_sent);
        self.rtp_packets
            .with_label_values(&[leg, "received"])
            .inc_by(media.packets_received);
        self.rtp_lost
            .with_label_values(&[leg])
            .inc_by(media.packets_lost);
        self.rtp_jitter
            .with_label_values(&[leg])
            .observe(f64::from(media.jitter_us) / 1_000_000.0);
    }

    /// Whether courtline is registered as `account` with `registrar` now.
    pub fn registration_changed(&self, account: &str, registrar: &str, up: bool) {
        self.registration_up
            .with_label_values(&[account, registrar])
            .set(i64::from(up));
    }

    /// A synthetic probe of `line` ran at `at_unix_s` and heard the right warning or not.
    pub fn probe_finished(&self, line: &str, success: bool, at_unix_s: f64) {
        self.probe_success
            .with_label_values(&[line])
            .set(i64::from(success));
        self.probe_last_run
            .with_label_values(&[line])
            .set(at_unix_s);
    }

    /// The shield banned a source.
    pub fn shield_banned(&self) {
        self.shield_bans.inc();
    }

    /// The Prometheus text format of every metric, with `snapshot` read into the gauges.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.spool_depth
            .set(i64::try_from(snapshot.spool_depth).unwrap_or(i64::MAX));
        self.delivery_lag.set(snapshot.delivery_lag_s);
        catch_up(&self.delivered, snapshot.delivered);
        for (target, up) in &snapshot.targets {
            self.target_up
                .with_label_values(&[target.as_str()])
                .set(i64::from(*up));
        }
        self.recording_queue_peak
            .set(i64::try_from(snapshot.recording_queue_peak).unwrap_or(i64::MAX));
        catch_up(&self.recordings_dropped, snapshot.recordings_dropped);
        self.draining.set(i64::from(snapshot.draining));
        for (shard, calls) in snapshot.media_shard_calls.iter().enumerate() {
            self.media_shard_calls
                .with_label_values(&[shard.to_string().as_str()])
                .set(i64::try_from(*calls).unwrap_or(i64::MAX));
        }
        text_of(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::exposition::value_of;

    #[test]
    fn a_call_hung_up_during_the_warning_is_counted_once_everywhere() {
        let metrics = Metrics::new();
        metrics.phase_changed(None, Some("prompting"));
        metrics.phase_changed(Some("prompting"), None);
        metrics.call_ended(&CallRecord {
            line_number: "12368".into(),
            end_reason: EndReason::CallerHungUpDuringPrompt as i32,
            prompt_started_at_ms: 1_000,
            prompt_ended_at_ms: 3_000,
            caller_media: Some(LegMedia {
                packets_sent: 100,
                packets_received: 98,
                packets_lost: 2,
                jitter_us: 4_000,
                ..LegMedia::default()
            }),
            ..CallRecord::default()
        });
        let text = metrics.render(&Snapshot::default());
        let calls =
            r#"courtline_calls_total{end_reason="caller_hung_up_during_prompt",line="12368"}"#;
        assert_eq!(value_of(&text, calls), Some("1"));
        assert_eq!(
            value_of(&text, r#"courtline_warning_started_total{line="12368"}"#),
            Some("1")
        );
        assert_eq!(
            value_of(&text, r#"courtline_warning_hangups_total{line="12368"}"#),
            Some("1")
        );
        assert_eq!(
            value_of(&text, r#"courtline_warning_completed_total{line="12368"}"#),
            None
        );
        assert_eq!(
            value_of(&text, r#"courtline_calls_in_progress{phase="prompting"}"#),
            Some("0")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_rtp_packets_total{direction="received",leg="caller"}"#
            ),
            Some("98")
        );
        assert_eq!(
            value_of(&text, r#"courtline_rtp_packets_lost_total{leg="caller"}"#),
            Some("2")
        );
        // No operator answered: no answer time.
        assert!(!text.contains("courtline_operator_answer_seconds_count{"));
    }

    #[test]
    fn probes_are_not_counted_as_calls_but_set_their_own_gauges() {
        let metrics = Metrics::new();
        metrics.call_ended(&CallRecord {
            line_number: "12368".into(),
            end_reason: EndReason::CallerHungUp as i32,
            prompt_started_at_ms: 1_000,
            prompt_completed: true,
            probe: true,
            ..CallRecord::default()
        });
        metrics.probe_finished("12368", false, 1_800_000_000.0);
        metrics.registration_changed("12368", "sip:pbx.example", true);
        let text = metrics.render(&Snapshot::default());
        assert!(!text.contains("courtline_calls_total{"), "{text}");
        assert!(!text.contains("courtline_warning_started_total{"));
        assert_eq!(
            value_of(&text, r#"courtline_probe_success{line="12368"}"#),
            Some("0")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_probe_last_run_timestamp_seconds{line="12368"}"#
            ),
            Some("1800000000")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_registration_up{account="12368",registrar="sip:pbx.example"}"#
            ),
            Some("1")
        );
    }

    #[test]
    fn operator_answer_time_runs_from_the_end_of_the_warning() {
        let metrics = Metrics::new();
        metrics.call_ended(&CallRecord {
            line_number: "12368".into(),
            end_reason: EndReason::CallerHungUp as i32,
            prompt_started_at_ms: 1_000,
            prompt_ended_at_ms: 9_000,
            prompt_completed: true,
            operator_answered_at_ms: 13_500,
            ..CallRecord::default()
        });
        let text = metrics.render(&Snapshot::default());
        assert_eq!(
            value_of(
                &text,
                r#"courtline_operator_answer_seconds_sum{line="12368"}"#
            ),
            Some("4.5")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_operator_answer_seconds_bucket{line="12368",le="3"}"#
            ),
            Some("0")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_operator_answer_seconds_bucket{line="12368",le="5"}"#
            ),
            Some("1")
        );
        assert_eq!(
            value_of(&text, r#"courtline_warning_completed_total{line="12368"}"#),
            Some("1")
        );
    }

    #[test]
    fn scraped_state_is_read_into_gauges_and_the_delivered_counter_only_grows() {
        let metrics = Metrics::new();
        let snapshot = Snapshot {
            spool_depth: 7,
            delivery_lag_s: 2.5,
            delivered: 40,
            targets: vec![("sip:op@192.0.2.1".into(), false)],
            recording_queue_peak: 12,
            recordings_dropped: 3,
            draining: true,
            media_shard_calls: vec![3, 2],
        };
        metrics.render(&snapshot);
        let text = metrics.render(&Snapshot {
            delivered: 42,
            ..snapshot
        });
        assert_eq!(
            value_of(&text, "courtline_records_spool_depth_events"),
            Some("7")
        );
        assert_eq!(
            value_of(&text, "courtline_records_delivery_lag_seconds"),
            Some("2.5")
        );
        assert_eq!(
            value_of(&text, "courtline_records_events_delivered_total"),
            Some("42")
        );
        assert_eq!(
            value_of(
                &text,
                r#"courtline_operator_target_up{target="sip:op@192.0.2.1"}"#
            ),
            Some("0")
        );
        assert_eq!(
            value_of(&text, "courtline_recording_queue_peak_messages"),
            Some("12")
        );
        assert_eq!(
            value_of(&text, "courtline_recordings_dropped_total"),
            Some("3")
        );
        assert_eq!(
            value_of(&text, r#"courtline_config_reloads_total{result="refused"}"#),
            Some("0")
        );
        assert_eq!(value_of(&text, "courtline_draining"), Some("1"));
        assert_eq!(
            value_of(&text, r#"courtline_media_shard_calls{shard="1"}"#),
            Some("2")
        );
    }
}
