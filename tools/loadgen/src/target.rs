//! The courtline under test: started as a child process with a generated
//! configuration (short prompt, operator pointing at the load generator,
//! large `max_calls`, wide RTP range), and watched through `/proc`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::calls::LINE;
use super::sip::{Message, Request};

/// Why the courtline under test could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// File or process trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// It started but never answered OPTIONS.
    #[error("courtline did not answer SIP OPTIONS on {0} within {2} s (--ready-timeout-s); see its log in {1}")]
    NotReady(SocketAddr, PathBuf, u64),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TargetError {
    let what = what.into();
    move |source| TargetError::Io { what, source }
}

/// Settings for the generated configuration.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The courtline binary.
    pub binary: PathBuf,
    /// Length of the prompt's words (leading silence comes on top).
    pub prompt_ms: u32,
    /// Where the operator is (the load generator's operator socket).
    pub operator: SocketAddr,
    /// `[sip] max_calls`.
    pub max_calls: u32,
    /// `[media] rtp_ports`.
    pub rtp_ports: (u16, u16),
    /// `[[lines]] record_audio`.
    pub record_audio: &'static str,
    /// How long courtline may take to answer its first OPTIONS (longer under
    /// a profiler such as valgrind).
    pub ready_timeout: Duration,
}

/// A courtline child process and its working directory.
pub struct Target {
    /// The child.
    child: Child,
    /// Its SIP address.
    pub sip: SocketAddr,
    /// Config, prompt, database and log live here; removed on drop.
    pub dir: PathBuf,
    /// The prompt file it plays (the load generator loads it too, for the expected frames).
    pub prompt_file: PathBuf,
}

impl Target {
    /// Writes the configuration and prompt and starts courtline; returns once it answers OPTIONS.
    pub fn spawn(config: &TargetConfig) -> Result<Target, TargetError> {
        let dir = std::env::temp_dir().join(format!(
            "courtline-loadgen-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let prompt_file = dir.join("prompt.wav");
        write_prompt(&prompt_file, config.prompt_ms)
            .map_err(io_err(format!("writing {}", prompt_file.display())))?;
        let sip = free_udp_port()?;
        let records = free_udp_port()?;
        let toml = format!(
            r#"[sip]
listen = "{sip}"
max_calls = {max_calls}

# Every caller comes from the load generator's one address, like calls from
# one trunk; the default per-source limit (sized for untrusted sources) would
# ban it within a second.
[sip.shield]
rate_per_s = 1000000.0
burst = 1000000

[media]
rtp_ports = "{lo}-{hi}"

[records.service]
listen = "127.0.0.1:{records_port}"
database = "{db}"

# No web console: its default port (8080) may be taken on a shared machine,
# and nobody looks at it during a load run.
[records.web]
listen = ""

[admin]
listen = "127.0.0.1:0"

[prompts.load]
file = "{prompt}"

[[lines]]
number = "{LINE}"
court = "load test"
prompt = "load"
operator = "sip:operator@{operator}"
ring_timeout_s = 30
record_audio = "{record_audio}"
"#,
            max_calls = config.max_calls,
            lo = config.rtp_ports.0,
            hi = config.rtp_ports.1,
            records_port = records.port(),
            db = dir.join("records.db").display(),
            prompt = prompt_file.display(),
            operator = config.operator,
            record_audio = config.record_audio,
        );
        let config_file = dir.join("courtline.toml");
        std::fs::write(&config_file, toml)
            .map_err(io_err(format!("writing {}", config_file.display())))?;
        let log = std::fs::File::create(dir.join("courtline.log"))
            .map_err(io_err("creating courtline.log"))?;
        let log_err = log.try_clone().map_err(io_err("opening courtline.log"))?;
        let child = Command::new(&config.binary)
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .current_dir(&dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,rsipstack=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_err(format!("starting {}", config.binary.display())))?;
        let mut target = Target {
            child,
            sip,
            dir,
            prompt_file,
        };
        target.wait_ready(config.ready_timeout)?;
        Ok(target)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The recordings courtline left (the evidence store beside the records
    /// database and the temporary area, both in the working directory) and
    /// the writer's peak queue depth from its log. Call after [`Target::stop`].
    pub fn recording_report(
        &self,
        policy: &'static str,
        disk_write_bytes: u64,
    ) -> crate::RecordingReport {
        let mut report = crate::RecordingReport {
            policy,
            disk_write_bytes,
            ..crate::RecordingReport::default()
        };
        for area in ["evidence", "recordings"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(area)) else {
                continue;
            };
            for path in entries.flatten().map(|entry| entry.path()) {
                if path.extension().is_none_or(|ext| ext != "wav") {
                    continue;
                }
                let Ok(reader) = hound::WavReader::open(&path) else {
                    continue;
                };
                let spec = reader.spec();
                report.files += 1;
                report.bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
                report.audio_seconds += f64::from(reader.duration()) / f64::from(spec.sample_rate);
            }
        }
        if report.audio_seconds > 0.0 {
            report.bytes_per_call_minute = report.bytes as f64 / (report.audio_seconds / 60.0);
        }
        report.writer_queue_peak = std::fs::read_to_string(self.dir.join("courtline.log"))
            .ok()
            .and_then(|log| {
                log.lines()
                    .filter(|line| line.contains("recording writer queue"))
                    .filter_map(|line| Some((field(line, "peak=")?, field(line, "capacity=")?)))
                    .max()
            });
        report
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), TargetError> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io_err("binding a probe socket"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(io_err("probe socket"))?;
        let me = socket.local_addr().map_err(io_err("probe socket"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            let options = Request {
                method: "OPTIONS",
                uri: &format!("sip:{}", self.sip),
                via_host: me,
                branch: &format!("z9hG4bK-probe-{:08x}", rand::random::<u32>()),
                from: &format!("<sip:probe@{me}>;tag=probe"),
                to: &format!("<sip:{}>", self.sip),
                call_id: &format!("probe-{:08x}", rand::random::<u32>()),
                cseq: 1,
                sdp: None,
            }
            .render();
            let _ = socket.send_to(options.as_bytes(), self.sip);
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if Message::parse(&buf[..n]).and_then(|m| m.status()).is_some() {
                    return Ok(());
                }
            }
        }
        Err(TargetError::NotReady(
            self.sip,
            self.dir.join("courtline.log"),
            timeout.as_secs(),
        ))
    }

    /// Asks courtline to stop (SIGTERM) and waits up to 20 s, then kills it.
    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        if std::env::var_os("LOADGEN_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// CPU and memory of a process, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
    /// CPU seconds of the media engine's threads (`media-N`) alone.
    pub media_cpu_seconds: f64,
}

/// Bytes `pid` caused to be written to storage so far (`/proc/<pid>/io`
/// write_bytes); None if the process is gone or the kernel does not count.
pub fn write_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// Reads CPU time and RSS of `pid`; None if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_seconds: cpu_seconds(&stat)?,
        rss_kib: status_kib(&status, "VmRSS:")?,
        peak_rss_kib: status_kib(&status, "VmHWM:")?,
        media_cpu_seconds: threads_cpu_seconds(pid, "media-"),
    })
}

/// CPU seconds of `pid`'s threads whose name starts with `prefix`
/// (`/proc/<pid>/task/<tid>/{comm,stat}`); threads that end meanwhile are skipped.
fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
        .filter_map(|task| cpu_seconds(&std::fs::read_to_string(task.path().join("stat")).ok()?))
        .sum()
}

/// The number after `key` in a log line (`peak=123`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// utime + stime from a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / if ticks > 0 { ticks as f64 } else { 100.0 })
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A loopback UDP port free right now.
fn free_udp_port() -> Result<SocketAddr, TargetError> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(io_err("finding a free port"))
}

/// Writes a 16 kHz mono WAV whose every 20 ms frame differs (a rising sweep).
pub fn write_prompt(path: &Path, ms: u32) -> io::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(io::Error::other)?;
    for i in 0..16 * ms {
        let t = f64::from(i) / 16000.0;
        let f = 300.0 + 1500.0 * (t % 2.0);
        let s = (2.0 * std::f64::consts::PI * f * t).sin() * 12000.0;
        w.write_sample(s as i16).map_err(io::Error::other)?;
    }
    w.finalize().map_err(io::Error::other)
}

/// Raises this process's open-file limit to the hard limit (children inherit
/// it); as root, also raises the hard limit to `want`. Returns the new soft limit.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for get/setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let raised = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_number_after_its_key_in_a_log_line() {
        let line = "INFO recording writer queue: new peak depth peak=1234 capacity=100000";
        assert_eq!(field(line, "peak="), Some(1234));
        assert_eq!(field(line, "capacity="), Some(100_000));
        assert_eq!(field(line, "missing="), None);
    }

    #[test]
    fn reads_proc_fields() {
        let stat = "1234 (court line) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / ticks));
        assert_eq!(
            status_kib("VmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", "VmRSS:"),
            Some(1024)
        );
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
    }
}
