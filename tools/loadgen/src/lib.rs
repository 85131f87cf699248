//! `courtline-loadgen`: plays callers and operators against a courtline on
//! loopback and measures what the callers hear. See `BENCHMARKS.md`.
//!
//! Three threads: SIP ([`calls`]), RTP ([`media`]) and the monitor (this
//! module) that samples courtline's `/proc` entry. Everything is bounded by a
//! call count and a deadline, and only loopback addresses are used.

pub mod calls;
pub mod media;
pub mod raw;
pub mod sip;
pub mod stats;
pub mod target;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

use calls::{CallDriver, CallsReport, Gauges, Hangup, Plan};
use courtline::switchboard::media::codec::Codec;
use courtline::switchboard::media::prompt::{Playlist, Prompt};
use media::MediaReport;
use raw::RawLimit;
use target::{ProcSample, Target, TargetConfig};

/// Leading silence courtline puts before the prompt (its default).
const LEADING_SILENCE_MS: u32 = 200;

/// Command-line options of `courtline-loadgen`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "courtline-loadgen",
    about = "Load generator: callers and operators against courtline on loopback"
)]
pub struct Options {
    /// Calls to place in total.
    #[arg(long, default_value_t = 100)]
    pub calls: u32,
    /// New calls per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Calls up at once, at most.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: u32,
    /// Seconds from the caller's ACK to the hang-up.
    #[arg(long, default_value_t = 5.0)]
    pub hold_s: f64,
    /// Who hangs up.
    #[arg(long, value_enum, default_value_t = Hangup::Caller)]
    pub hangup: Hangup,
    /// Bridged callers and operators send audio both ways (relay load).
    #[arg(long)]
    pub talk: bool,
    /// Length of the prompt's words in ms (courtline adds 200 ms of silence).
    #[arg(long, default_value_t = 1000)]
    pub prompt_ms: u32,
    /// Codec the callers offer and the operators answer.
    #[arg(long, value_enum, default_value_t = CodecArg::Pcmu)]
    pub codec: CodecArg,
    /// Hard limit on the whole run, seconds.
    #[arg(long, default_value_t = 300)]
    pub max_duration_s: u64,
    /// Seconds of the raw loopback measurement before the calls (0 skips it).
    #[arg(long, default_value_t = 2.0)]
    pub raw_s: f64,
    /// Measure only the raw loopback limit and print it: the figure another
    /// load generator's run (tools/sipp-bench.sh) is compared with.
    #[arg(long)]
    pub raw_only: bool,
    /// The courtline binary to start (default: `courtline` next to this program).
    #[arg(long)]
    pub courtline: Option<PathBuf>,
    /// Seconds courtline may take to answer its first OPTIONS (raise it when
    /// `--courtline` is a wrapper that runs it under valgrind).
    #[arg(long, default_value_t = 15)]
    pub ready_timeout_s: u64,
    /// RTP port range for the started courtline.
    #[arg(long, default_value = "20000-59999")]
    pub rtp_ports: String,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The line's `record_audio` (courtline's default is `on_report`, which
    /// records every call to its temporary area and keeps only reported ones).
    #[arg(long, value_enum, default_value_t = RecordAudio::OnReport)]
    pub record_audio: RecordAudio,
    /// Seconds to keep courtline running after the last call ended, to see
    /// how much memory it gives back (0: stop it at once).
    #[arg(long, default_value_t = 0.0)]
    pub linger_s: f64,
}

/// `[[lines]] record_audio` of the started courtline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordAudio {
    /// Every call recorded and kept.
    Always,
    /// Every call recorded, kept only when reported or flagged.
    OnReport,
    /// No recording.
    Never,
}

impl RecordAudio {
    /// The value as courtline's configuration spells it.
    pub fn config_value(self) -> &'static str {
        match self {
            RecordAudio::Always => "always",
            RecordAudio::OnReport => "on_report",
            RecordAudio::Never => "never",
        }
    }
}

/// Codec choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecArg {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Pcmu => Codec::Pcmu,
            CodecArg::Pcma => Codec::Pcma,
        }
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Bad option.
    #[error("{0}")]
    Options(String),
    /// Courtline could not be started.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// A socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The expected prompt could not be loaded.
    #[error("loading the generated prompt: {0}")]
    Prompt(String),
}

/// Courtline's resource use during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Process id.
    pub pid: u32,
    /// CPU seconds over the whole run (user + system).
    pub cpu_seconds: f64,
    /// Peak RSS (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// RSS before the first call, KiB.
    pub idle_rss_kib: u64,
    /// RSS when the last call had ended, KiB.
    pub end_rss_kib: u64,
    /// Seconds courtline ran on after the last call (`--linger-s`).
    pub linger_seconds: f64,
    /// RSS at the end of that time, KiB (what it gave back to the system).
    pub linger_rss_kib: u64,
    /// Calls up during the steady window (all planned calls up at once).
    pub steady_calls: u32,
    /// Length of the steady window, seconds.
    pub steady_seconds: f64,
    /// CPU during the steady window, fraction of one core.
    pub steady_cpu_cores: f64,
    /// CPU per call during the steady window, percent of one core.
    pub cpu_percent_per_call: f64,
    /// CPU of the media engine's threads alone during the steady window, fraction of one core.
    pub steady_media_cpu_cores: f64,
    /// Highest RSS in the steady window, KiB.
    pub steady_rss_kib: u64,
    /// (steady RSS − idle RSS) / steady calls, KiB.
    pub rss_kib_per_call: f64,
    /// RTP packets/s courtline sent to callers during the steady window (50 per call leg).
    pub steady_packets_per_second: f64,
    /// `steady_packets_per_second` / the raw loopback limit.
    pub fraction_of_raw_limit: f64,
}

/// What call recording cost: files kept, disk written, the writer's queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordingReport {
    /// `record_audio` of the run.
    pub policy: &'static str,
    /// Recordings kept (WAV files in the evidence store and the temporary area).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Audio they hold, seconds (from each WAV header).
    pub audio_seconds: f64,
    /// `bytes` per minute of recorded audio.
    pub bytes_per_call_minute: f64,
    /// Bytes courtline caused to be written to storage over the run
    /// (`/proc/<pid>/io` write_bytes: recordings, the records database, logs).
    pub disk_write_bytes: u64,
    /// Highest depth of the recording writer's queue courtline logged (it logs
    /// a new peak at most every 10 s), and the queue's capacity.
    pub writer_queue_peak: Option<(u64, u64)>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine: online CPUs.
    pub nproc: usize,
    /// Machine: CPU model.
    pub cpu_model: String,
    /// Raw loopback limit, if measured.
    pub raw_limit: Option<RawLimit>,
    /// SIP results.
    pub calls: CallsReport,
    /// RTP results.
    pub media: MediaReport,
    /// Courtline's resource use.
    pub server: ServerReport,
    /// Call recording.
    pub recording: RecordingReport,
}

/// Runs one load test as `options` say.
pub fn run(options: &Options) -> Result<Report, LoadgenError> {
    let io = |what: &'static str| move |source| LoadgenError::Io { what, source };
    // Each call holds up to 4 sockets in courtline (RTP+RTCP per leg); headroom on top.
    target::raise_fd_limit(u64::from(options.concurrency) * 6 + 4096);
    let raw_limit = if options.raw_s > 0.0 {
        Some(
            raw::measure(Duration::from_secs_f64(options.raw_s))
                .map_err(io("raw loopback test"))?,
        )
    } else {
        None
    };
    let rtp_ports = parse_range(&options.rtp_ports)?;
    let binary = match &options.courtline {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(io("locating this program"))?
            .with_file_name("courtline"),
    };
    let caller_sip =
        UdpSocket::bind("127.0.0.1:0").map_err(io("binding the callers' SIP socket"))?;
    let operator_sip =
        UdpSocket::bind("127.0.0.1:0").map_err(io("binding the operators' SIP socket"))?;
    let caller_rtp =
        UdpSocket::bind("127.0.0.1:0").map_err(io("binding the callers' RTP socket"))?;
    let operator_rtp =
        UdpSocket::bind("127.0.0.1:0").map_err(io("binding the operators' RTP socket"))?;
    let local = |s: &UdpSocket| s.local_addr().map_err(io("socket address"));
    let (operator_sip_addr, caller_rtp_addr, operator_rtp_addr) = (
        local(&operator_sip)?,
        local(&caller_rtp)?,
        local(&operator_rtp)?,
    );

    let mut target = Target::spawn(&TargetConfig {
        binary,
        prompt_ms: options.prompt_ms,
        operator: operator_sip_addr,
        max_calls: options.concurrency.saturating_mul(2).max(100),
        rtp_ports,
        record_audio: options.record_audio.config_value(),
        ready_timeout: Duration::from_secs(options.ready_timeout_s),
    })?;
    let prompt = Prompt::load("load", "", &target.prompt_file)
        .map_err(|e| LoadgenError::Prompt(e.to_string()))?;
    // What courtline plays for the target's one-prompt line: lead-in, then the prompt.
    let prompt = Arc::new(Playlist::new(vec![prompt], LEADING_SILENCE_MS, 0));
    let codec = Codec::from(options.codec);
    let (media_orders, media_thread) = media::spawn(
        caller_rtp,
        operator_rtp,
        prompt,
        codec,
        options.calls as usize,
    )
    .map_err(io("starting the media thread"))?;
    let gauges = Arc::new(Gauges::default());
    let started = Instant::now();
    let plan = Plan {
        calls: options.calls,
        rate: options.rate,
        concurrency: options.concurrency,
        hold: Duration::from_secs_f64(options.hold_s.max(0.0)),
        hangup: options.hangup,
        talk: options.talk,
        payload_type: codec.payload_type(),
        deadline: started + Duration::from_secs(options.max_duration_s),
    };
    let pid = target.pid();
    let idle = target::sample(pid).unwrap_or_default();
    let driver = CallDriver::new(
        caller_sip,
        operator_sip,
        caller_rtp_addr,
        operator_rtp_addr,
        target.sip,
        plan,
        media_orders.clone(),
        gauges.clone(),
    )
    .map_err(io("setting up the SIP sockets"))?;
    let sip_thread = std::thread::Builder::new()
        .name("loadgen-sip".into())
        .spawn(move || driver.run())
        .map_err(io("starting the SIP thread"))?;

    let steady_target = options.concurrency.min(options.calls);
    let mut window = SteadyWindow::default();
    let mut last = idle;
    while !sip_thread.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = target::sample(pid) else {
            break;
        };
        last = now;
        let gauge = if options.talk {
            &gauges.bridged
        } else {
            &gauges.up
        };
        window.observe(gauge.load(Ordering::Relaxed) >= steady_target, now);
    }
    let calls = sip_thread.join().unwrap_or_default();
    let (reply, report) = mpsc::channel();
    let _ = media_orders.send(media::MediaOrder::Finish(reply));
    let media = report.recv().unwrap_or_default();
    let _ = media_thread.join();
    let end = target::sample(pid).unwrap_or(last);
    let linger = Duration::from_secs_f64(options.linger_s.max(0.0));
    std::thread::sleep(linger);
    let after = target::sample(pid).unwrap_or(end);
    let disk_write_bytes = target::write_bytes(pid).unwrap_or_default();
    target.stop();
    let recording = target.recording_report(options.record_audio.config_value(), disk_write_bytes);

    let mut server = window.report(pid, idle, end, steady_target, options.talk, raw_limit);
    server.end_rss_kib = end.rss_kib;
    server.linger_seconds = linger.as_secs_f64();
    server.linger_rss_kib = after.rss_kib;
    Ok(Report {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
        raw_limit,
        calls,
        media,
        server,
        recording,
    })
}

/// The span during which every planned call was up at once.
#[derive(Debug, Default)]
struct SteadyWindow {
    /// First sample with all calls up, and when.
    first: Option<(Instant, ProcSample)>,
    /// Last sample with all calls up, and when.
    last: Option<(Instant, ProcSample)>,
    /// Highest RSS seen in the window.
    max_rss_kib: u64,
}

impl SteadyWindow {
    fn observe(&mut self, all_up: bool, sample: ProcSample) {
        if !all_up {
            return;
        }
        let now = Instant::now();
        self.first.get_or_insert((now, sample));
        self.last = Some((now, sample));
        self.max_rss_kib = self.max_rss_kib.max(sample.rss_kib);
    }

    fn report(
        &self,
        pid: u32,
        idle: ProcSample,
        last: ProcSample,
        calls: u32,
        talk: bool,
        raw: Option<RawLimit>,
    ) -> ServerReport {
        let mut r = ServerReport {
            pid,
            cpu_seconds: last.cpu_seconds - idle.cpu_seconds,
            peak_rss_kib: last.peak_rss_kib,
            idle_rss_kib: idle.rss_kib,
            ..ServerReport::default()
        };
        if let (Some((t0, s0)), Some((t1, s1))) = (self.first, self.last) {
            let seconds = t1.duration_since(t0).as_secs_f64();
            r.steady_calls = calls;
            r.steady_seconds = seconds;
            r.steady_rss_kib = self.max_rss_kib;
            r.rss_kib_per_call =
                self.max_rss_kib.saturating_sub(idle.rss_kib) as f64 / f64::from(calls.max(1));
            if seconds > 0.0 {
                r.steady_cpu_cores = (s1.cpu_seconds - s0.cpu_seconds) / seconds;
                r.steady_media_cpu_cores = (s1.media_cpu_seconds - s0.media_cpu_seconds) / seconds;
                r.cpu_percent_per_call = 100.0 * r.steady_cpu_cores / f64::from(calls.max(1));
            }
            // Prompt phase: one stream to each caller; bridged and talking: one each way per leg.
            let streams = if talk { 2 * calls } else { calls };
            r.steady_packets_per_second = 50.0 * f64::from(streams);
            if let Some(raw) = raw {
                r.fraction_of_raw_limit = r.steady_packets_per_second / raw.received_pps.max(1.0);
            }
        }
        r
    }
}

fn parse_range(text: &str) -> Result<(u16, u16), LoadgenError> {
    let bad = || LoadgenError::Options(format!("--rtp-ports {text:?}: expected LOW-HIGH"));
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo >= hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

impl Report {
    /// A human-readable summary.
    pub fn render(&self) -> String {
        let c = &self.calls;
        let m = &self.media;
        let s = &self.server;
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        line(format!("machine: {} CPUs, {}", self.nproc, self.cpu_model));
        if let Some(raw) = &self.raw_limit {
            line(raw.to_string());
        }
        let failed: u64 = c.failed.values().sum();
        line(format!(
            "calls: {} attempted, {} completed, {} failed, {} unfinished; {} bridged; {:.1} calls/s achieved over {:.1} s",
            c.attempted, c.completed, failed, c.unfinished, c.bridged, c.achieved_cps, c.placing_seconds
        ));
        for (reason, n) in &c.failed {
            line(format!("  failed: {n} × {reason}"));
        }
        line(format!(
            "retransmissions: {} received from courtline, {} sent by the load generator",
            c.retransmissions_received, c.retransmissions_sent
        ));
        let ms = |x: &stats::Summary| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                x.p50_ms, x.p99_ms, x.max_ms, x.count
            )
        };
        line(format!("INVITE → 200 OK: {}", ms(&c.setup_time)));
        line(format!(
            "first prompt packet after ACK: {}",
            ms(&m.first_packet_after_ack)
        ));
        line(format!(
            "RTP: {} received, {} lost, {} stray; {} sent by load generator ({} dropped)",
            m.packets_received, m.packets_lost, m.stray_packets, m.packets_sent, m.send_dropped
        ));
        line(format!(
            "inter-arrival deviation from 20 ms, to callers: {}",
            ms(&m.caller_deviation)
        ));
        line(format!(
            "inter-arrival deviation from 20 ms, to operators: {}",
            ms(&m.operator_deviation)
        ));
        line(format!(
            "prompt: {} frames checked, {} wrong; {} of {} caller streams heard the whole prompt byte-exact; {} lost their first packet (not checked)",
            m.prompt_frames_checked, m.prompt_frames_wrong, m.prompts_complete, m.caller_streams, m.prompts_unanchored
        ));
        line(format!(
            "courtline (pid {}): {:.2} CPU s, peak RSS {} KiB (idle {} KiB)",
            s.pid, s.cpu_seconds, s.peak_rss_kib, s.idle_rss_kib
        ));
        line(format!(
            "RSS after the last call: {} KiB; {:.0} s later: {} KiB = {:.2} × idle",
            s.end_rss_kib,
            s.linger_seconds,
            s.linger_rss_kib,
            s.linger_rss_kib as f64 / s.idle_rss_kib.max(1) as f64
        ));
        if s.steady_calls > 0 {
            line(format!(
                "steady window: {} calls up for {:.1} s: {:.3} cores ({:.3} in the media engine) = {:.4}% of a core per call; RSS {} KiB = {:.1} KiB per call; {:.0} packets/s = {:.0}% of the raw limit",
                s.steady_calls, s.steady_seconds, s.steady_cpu_cores, s.steady_media_cpu_cores, s.cpu_percent_per_call,
                s.steady_rss_kib, s.rss_kib_per_call, s.steady_packets_per_second,
                100.0 * s.fraction_of_raw_limit
            ));
        } else {
            line("steady window: never had all planned calls up at once".into());
        }
        let r = &self.recording;
        line(format!(
            "recording ({}): {} files kept, {} bytes, {:.1} s of audio = {:.0} bytes per call-minute; {} bytes written to storage by courtline; writer queue peak {}",
            r.policy,
            r.files,
            r.bytes,
            r.audio_seconds,
            r.bytes_per_call_minute,
            r.disk_write_bytes,
            r.writer_queue_peak
                .map_or("not logged".into(), |(peak, capacity)| format!("{peak} of {capacity}"))
        ));
        out
    }
}
