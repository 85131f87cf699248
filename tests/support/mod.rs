//! Test peers for the integration tests: a courtline started in-process on
//! loopback ports, and a tiny hand-written SIP user agent (raw UDP text) that
//! plays the caller or the operator. Writing SIP by hand here, rather than with
//! the stack courtline uses, keeps the tests an independent peer.
#![allow(dead_code)]

pub mod serve_child;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courtline::cli::serve::{load_live, start, Running};
use courtline::config::Config;
use courtline::contract::pb::records_service_client::RecordsServiceClient;
use courtline::contract::pb::{CallRecord, ListCallsRequest};
use courtline::switchboard::media::prompt::Playlist;
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

/// A courtline running on loopback with a short generated prompt.
pub struct TestSwitchboard {
    /// The running service.
    pub running: Option<Running>,
    /// Its SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// Its SIP-over-TLS address, if configured.
    pub tls: Option<SocketAddr>,
    /// Its records service address.
    pub records: SocketAddr,
    /// Its admin endpoint (metrics, health).
    pub admin: SocketAddr,
    /// What the line plays (lead-in, prompts, gaps), loaded the same way courtline loads it.
    pub playlist: Arc<Playlist>,
    /// Keeps the temp dir (database, WAV) alive.
    pub dir: tempfile::TempDir,
}

/// Options for [`TestSwitchboard::start`].
pub struct Options {
    /// Operator hunt list.
    pub operators: Vec<String>,
    /// `[sip] answer_delay_ms`.
    pub answer_delay_ms: u64,
    /// `[sip] max_calls`.
    pub max_calls: usize,
    /// Ring timeout per operator.
    pub ring_timeout_s: u32,
    /// Prompt length in ms (generated tone sweep).
    pub prompt_ms: u32,
    /// A second prompt (another sweep) of this length, played after the first: a playlist.
    pub second_prompt_ms: Option<u32>,
    /// `prompt_gap_ms` of the line.
    pub prompt_gap_ms: u32,
    /// Sample rate of the generated prompt WAVs: 16 kHz (G.722 offered) unless set.
    pub prompt_rate: u32,
    /// RTP port range (distinct per test so parallel tests never share ports).
    pub rtp_ports: (u16, u16),
    /// `[sip] listen` (`[::1]:0` for IPv6).
    pub sip_listen: String,
    /// `[sip] t1_ms` (short values make 64·T1 timeouts testable).
    pub t1_ms: u64,
    /// Extra TOML lines for the `[sip]` section (TLS files, public address, ...).
    pub sip_extra: String,
    /// Extra TOML lines for the `[media]` section (`rtp_timeout_s`, ...).
    pub media_extra: String,
    /// Extra TOML lines for the line (`answer_mode`, ...).
    pub line_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            operators: vec![],
            answer_delay_ms: 0,
            max_calls: 50,
            ring_timeout_s: 30,
            prompt_ms: 1000,
            second_prompt_ms: None,
            prompt_gap_ms: 600,
            prompt_rate: 16000,
            rtp_ports: (30000, 30099),
            sip_listen: "127.0.0.1:0".into(),
            t1_ms: 500,
            sip_extra: String::new(),
            media_extra: String::new(),
            line_extra: String::new(),
        }
    }
}

/// Writes a 16 kHz mono WAV with a recognisable, non-periodic signal.
pub fn write_test_prompt(path: &std::path::Path, ms: u32) {
    write_sweep(path, ms, 300.0, 16000);
}

/// Writes a mono WAV at `rate` sweeping up from `start_hz`.
pub fn write_sweep(path: &std::path::Path, ms: u32, start_hz: f64, rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = rate / 1000 * ms;
    for i in 0..n {
        let t = f64::from(i) / f64::from(rate);
        // A rising sweep: every 20 ms frame differs from every other.
        let f = start_hz + 1500.0 * t;
        let s = (2.0 * std::f64::consts::PI * f * t).sin() * 12000.0;
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
}

impl TestSwitchboard {
    /// Starts courtline with one line, "02112368", on loopback.
    pub async fn start(options: Options) -> TestSwitchboard {
        // CL_TEST_LOG=debug shows the service's logs for a failing test.
        if let Ok(filter) = std::env::var("CL_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("prompt.wav");
        write_sweep(&wav, options.prompt_ms, 300.0, options.prompt_rate);
        let second = dir.path().join("second.wav");
        let (second_section, line_prompt) = match options.second_prompt_ms {
            Some(ms) => {
                write_sweep(&second, ms, 900.0, options.prompt_rate);
                (
                    format!(
                        "[prompts.second]\nfile = \"{}\"\nversion = \"2\"\n",
                        second.display()
                    ),
                    "[\"test\", \"second\"]",
                )
            }
            None => (String::new(), "\"test\""),
        };
        let db = dir.path().join("records.db");
        let operators: Vec<String> = options
            .operators
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect();
        let toml = format!(
            r#"
[sip]
listen = "{sip_listen}"
max_calls = {max_calls}
answer_delay_ms = {answer_delay}
retry_after_s = 7
t1_ms = {t1}
{sip_extra}

[media]
rtp_ports = "{lo}-{hi}"
leading_silence_ms = 200
{media_extra}

[records.service]
listen = "127.0.0.1:0"
database = "{db}"

[records.web]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[prompts.test]
file = "{wav}"
version = "1"

{second_section}
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = {line_prompt}
prompt_gap_ms = {gap}
operator = [{operators}]
ring_timeout_s = {ring}
{line_extra}
"#,
            sip_listen = options.sip_listen,
            max_calls = options.max_calls,
            answer_delay = options.answer_delay_ms,
            lo = options.rtp_ports.0,
            hi = options.rtp_ports.1,
            db = db.display(),
            wav = wav.display(),
            operators = if operators.is_empty() {
                "\"sip:nobody@127.0.0.1:9\"".to_string()
            } else {
                operators.join(", ")
            },
            ring = options.ring_timeout_s,
            t1 = options.t1_ms,
            sip_extra = options.sip_extra,
            gap = options.prompt_gap_ms,
            media_extra = options.media_extra,
            line_extra = options.line_extra,
        );
        let config = Config::from_toml_str(&toml, "test.toml").unwrap();
        let playlist = load_live(config.clone())
            .unwrap()
            .playlists
            .at(chrono::Utc::now())
            .in_hours["02112368"]
            .clone();
        let running = start(config).await.unwrap();
        TestSwitchboard {
            sip: running.sip_addr,
            tls: running.tls_addr,
            records: running.records_addr.unwrap(),
            admin: running.admin_addr.unwrap(),
            running: Some(running),
            playlist,
            dir,
        }
    }

    /// The record whose SIP Call-ID is `sip_call_id`, waiting up to 5 s for it.
    pub async fn record(&self, sip_call_id: &str) -> CallRecord {
        record_of(self.records, sip_call_id, Duration::from_secs(5)).await
    }

    /// Waits up to 10 s for `/metrics` to show `series` (name and labels as
    /// rendered) at `value`.
    pub async fn expect_metric(&self, series: &str, value: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.admin
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            let found = text
                .lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
            if found == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {found:?}, not {value}, after 10 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops courtline (ends calls, flushes records).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// One parsed SIP message.
#[derive(Debug, Clone)]
pub struct Sip {
    /// The request or status line.
    pub first_line: String,
    /// Headers in order, names lower-cased and compact forms expanded.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Where it came from.
    pub from: SocketAddr,
}

impl Sip {
    /// Parses one message (head and body).
    pub fn parse(bytes: &[u8], from: SocketAddr) -> Sip {
        let text = String::from_utf8_lossy(bytes).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let first_line = lines.next().unwrap_or("").to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| {
                let n = n.trim().to_ascii_lowercase();
                let n = match n.as_str() {
                    "v" => "via",
                    "f" => "from",
                    "t" => "to",
                    "i" => "call-id",
                    "m" => "contact",
                    "l" => "content-length",
                    "c" => "content-type",
                    other => other,
                }
                .to_string();
                (n, v.trim().to_string())
            })
            .collect();
        Sip {
            first_line,
            headers,
            body: body.to_string(),
            from,
        }
    }

    /// Status code of a response (0 for requests).
    pub fn status(&self) -> u16 {
        self.first_line
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Method of a request ("" for responses).
    pub fn method(&self) -> &str {
        if self.first_line.starts_with("SIP/2.0") {
            ""
        } else {
            self.first_line.split(' ').next().unwrap_or("")
        }
    }

    /// First header value by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// RTP address from the SDP body (`c=IN IP4` or `c=IN IP6`).
    pub fn sdp_rtp_addr(&self) -> SocketAddr {
        let ip: std::net::IpAddr = self
            .body
            .lines()
            .find_map(|l| {
                l.strip_prefix("c=IN IP4 ")
                    .or_else(|| l.strip_prefix("c=IN IP6 "))
            })
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let port = self
            .body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        SocketAddr::new(ip, port.parse().unwrap())
    }
}

/// A SIP endpoint on a loopback UDP socket.
pub struct SipPeer {
    /// Signalling socket.
    pub socket: UdpSocket,
    /// Its address.
    pub addr: SocketAddr,
}

impl SipPeer {
    /// Binds on 127.0.0.1:0.
    pub async fn bind() -> SipPeer {
        SipPeer::bind_on("127.0.0.1").await
    }

    /// Binds on another loopback address (a different "source" for per-source limits).
    pub async fn bind_on(ip: &str) -> SipPeer {
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        SipPeer { socket, addr }
    }

    /// Sends raw text.
    pub async fn send(&self, to: SocketAddr, text: &str) {
        self.socket.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// Next message within `wait`, or None.
    pub async fn recv(&self, wait: Duration) -> Option<Sip> {
        let mut buf = vec![0u8; 65535];
        match timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some(Sip::parse(&buf[..n], from)),
            _ => None,
        }
    }

    /// Waits for a response with `status` (skipping others); panics after `wait`.
    pub async fn expect_status(&self, status: u16, wait: Duration) -> Sip {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {status} within {wait:?}"));
            if msg.status() == status {
                return msg;
            }
            assert!(
                msg.status() < 200 || msg.status() == status,
                "expected {status}, got {}",
                msg.first_line
            );
        }
    }

    /// Waits for the 200 to our `method` request (skipping anything else); panics after `wait`.
    pub async fn expect_ok_to(&self, method: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let msg = self
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await
                .unwrap_or_else(|| panic!("no 200 to {method} within {wait:?}"));
            if msg.status() == 200 && msg.header("cseq").is_some_and(|c| c.ends_with(method)) {
                return;
            }
        }
    }

    /// Waits for a request with `method`; panics after `wait`.
    pub async fn expect_request(&self, method: &str, wait: Duration) -> Sip {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {method} within {wait:?}"));
            if msg.method() == method {
                return msg;
            }
        }
    }

    /// Answers `request` with `status`, echoing the transaction headers.
    pub async fn respond(
        &self,
        request: &Sip,
        status: &str,
        to_tag: Option<&str>,
        extra: &str,
        body: &str,
    ) {
        self.send(
            request.from,
            &response_text(request, status, to_tag, extra, body),
        )
        .await;
    }

    /// Answers `invite` as an operator's phone: 200 OK with To tag `tag`, a
    /// Contact and `body` (SDP), then waits for courtline's ACK.
    pub async fn answer_invite(&self, invite: &Sip, tag: &str, body: &str) {
        let headers = format!(
            "Contact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
            self.addr
        );
        self.respond(invite, "200 OK", Some(tag), &headers, body)
            .await;
        self.expect_request("ACK", Duration::from_secs(2)).await;
    }
}

/// SDP offering the payload types `pts` (PCMU 0, PCMA 8, G722 9, G729 18, telephone-event 101) from `rtp`.
pub fn sdp(rtp: SocketAddr, pts: &str) -> String {
    let mut s = format!(
        "v=0\r\no=test 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n",
        family = if rtp.is_ipv4() { "IP4" } else { "IP6" },
        ip = rtp.ip(),
        port = rtp.port()
    );
    for pt in pts.split(' ') {
        match pt {
            "0" => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            "8" => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            "101" => s.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"),
            "18" => s.push_str("a=rtpmap:18 G729/8000\r\n"),
            "9" => s.push_str("a=rtpmap:9 G722/8000\r\n"),
            _ => {}
        }
    }
    s
}

/// A SIPp process, killed by its PID when dropped (a failing test leaves none).
pub struct Sipp(pub std::process::Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Sipp {
    /// Waits up to 20 s for SIPp to finish its one call; whether it passed.
    pub async fn passed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "SIPp did not finish its call");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Two free UDP ports on loopback for SIPp's own sockets: SIP, and media (it
/// binds the media port and the one two above it).
pub fn sipp_ports() -> (u16, u16) {
    let free = |port: u16| std::net::UdpSocket::bind(("127.0.0.1", port)).ok();
    loop {
        let sip = free(0).unwrap();
        let media = free(0).unwrap();
        let (sip_port, media_port) = (
            sip.local_addr().unwrap().port(),
            media.local_addr().unwrap().port(),
        );
        if media_port < u16::MAX - 2 && free(media_port + 2).is_some() {
            return (sip_port, media_port);
        }
    }
}

/// The caller side of one call.
pub struct Caller {
    /// SIP socket.
    pub sip: SipPeer,
    /// RTP socket.
    pub rtp: UdpSocket,
    /// Call-ID used.
    pub call_id: String,
    /// Where courtline is.
    pub target: SocketAddr,
    /// To header with courtline's tag, once answered.
    pub to: String,
    /// From header sent.
    pub from: String,
    /// CSeq counter.
    pub cseq: u32,
}

impl Caller {
    /// A caller with its own SIP and RTP sockets, on the loopback address of
    /// `target`'s family (127.0.0.1 or ::1).
    pub async fn new(target: SocketAddr) -> Caller {
        let ip = if target.is_ipv4() { "127.0.0.1" } else { "::1" };
        let sip = SipPeer::bind_on(ip).await;
        let rtp = UdpSocket::bind((ip, 0)).await.unwrap();
        Caller {
            call_id: format!("{}@test", uuid::Uuid::new_v4()),
            from: format!("\"张三\" <sip:13800138000@{}>;tag=caller1", sip.addr),
            to: "<sip:02112368@courtline>".into(),
            sip,
            rtp,
            target,
            cseq: 1,
        }
    }

    /// Sends the INVITE for `line` offering payload types `pts`.
    pub async fn invite(&self, line: &str, pts: &str) {
        let body = sdp(self.rtp.local_addr().unwrap(), pts);
        let (target, me) = (self.target, self.sip.addr);
        let text = self
            .initial(
                "INVITE",
                &format!("sip:{line}@{target}"),
                &format!("<sip:{line}@{target}>"),
            )
            .header("Contact", format_args!("<sip:13800138000@{me}>"))
            .header("User-Agent", "courtline-test-caller")
            .body("application/sdp", &body)
            .text();
        self.sip.send(self.target, &text).await;
    }

    /// The first request of this caller's call (`method` to `uri`, CSeq 1, the
    /// INVITE's branch), for tests that add their own headers and body.
    pub fn initial(&self, method: &str, uri: &str, to: &str) -> RawRequest {
        RawRequest::new(
            method,
            uri,
            self.sip.addr,
            &format!("z9hG4bK-inv-{}", self.call_id),
        )
        .dialog(&self.from, to, &self.call_id)
        .cseq(1)
    }

    /// Sends ACK for a 2xx (or non-2xx when `branch` is the INVITE's).
    pub async fn ack(&self, to: &str, branch: &str) {
        let text = RawRequest::new(
            "ACK",
            format_args!("sip:02112368@{}", self.target),
            self.sip.addr,
            branch,
        )
        .dialog(&self.from, to, &self.call_id)
        .cseq(1)
        .text();
        self.sip.send(self.target, &text).await;
    }

    /// Hangs up: sends BYE and waits for its 200 (skipping INVITE 200 retransmissions).
    pub async fn hang_up(&mut self) {
        self.request("BYE").await;
        self.sip.expect_ok_to("BYE", Duration::from_secs(3)).await;
    }

    /// Sends an in-dialog request (BYE) or CANCEL.
    pub async fn request(&mut self, method: &str) {
        self.request_with_body(method, "", "").await;
    }

    /// Sends an in-dialog request (INFO, ...) or CANCEL with a body of `content_type`.
    pub async fn request_with_body(&mut self, method: &str, content_type: &str, body: &str) {
        let (cseq, branch, to) = if method == "CANCEL" {
            (
                1,
                format!("z9hG4bK-inv-{}", self.call_id),
                "<sip:02112368@courtline>".to_string(),
            )
        } else {
            self.cseq += 1;
            (
                self.cseq,
                format!("z9hG4bK-{method}-{}", self.cseq),
                self.to.clone(),
            )
        };
        let to = if method == "CANCEL" {
            format!("<sip:02112368@{}>", self.target)
        } else {
            to
        };
        let text = RawRequest::new(
            method,
            format_args!("sip:02112368@{}", self.target),
            self.sip.addr,
            &branch,
        )
        .dialog(&self.from, &to, &self.call_id)
        .cseq(cseq)
        .body(content_type, body)
        .text();
        self.sip.send(self.target, &text).await;
    }

    /// Sends `method` with CSeq number `cseq` in the dialog, with an SDP body if not empty.
    async fn in_dialog(&self, method: &str, cseq: u32, branch: &str, sdp_body: &str) {
        let content_type = if sdp_body.is_empty() {
            ""
        } else {
            "application/sdp"
        };
        let me = self.sip.addr;
        let text = RawRequest::new(
            method,
            format_args!("sip:courtline@{}", self.target),
            me,
            branch,
        )
        .dialog(&self.from, &self.to, &self.call_id)
        .cseq(cseq)
        .header("Contact", format_args!("<sip:c@{me}>"))
        .body(content_type, sdp_body)
        .text();
        self.sip.send(self.target, &text).await;
    }

    /// Sends a re-INVITE with `offer` in the dialog; returns its CSeq number.
    pub async fn reinvite(&mut self, offer: &str) -> u32 {
        self.cseq += 1;
        let cseq = self.cseq;
        self.in_dialog("INVITE", cseq, &format!("z9hG4bK-re{cseq}"), offer)
            .await;
        cseq
    }

    /// Waits for the 200 OK to the re-INVITE `cseq` and ACKs it.
    pub async fn reinvite_answered(&self, cseq: u32) -> Sip {
        let ok = loop {
            let msg = self
                .sip
                .recv(Duration::from_secs(3))
                .await
                .expect("200 for the re-INVITE");
            if msg.status() == 200 && msg.header("cseq") == Some(&format!("{cseq} INVITE")) {
                break msg;
            }
        };
        self.in_dialog("ACK", cseq, &format!("z9hG4bK-reack{cseq}"), "")
            .await;
        ok
    }

    /// INVITE, wait for 200, ACK: returns the 200 OK.
    pub async fn call(&mut self, pts: &str) -> Sip {
        self.invite("02112368", pts).await;
        let ok = self.sip.expect_status(200, Duration::from_secs(5)).await;
        self.to = ok.header("to").unwrap().to_string();
        let to = self.to.clone();
        self.ack(&to, "z9hG4bK-ack-1").await;
        ok
    }
}

/// A call bridged to a test operator (prompt of 200 ms, operator answering μ-law).
pub struct BridgedCall {
    /// The switchboard.
    pub sb: TestSwitchboard,
    /// The caller, ACKed.
    pub caller: Caller,
    /// courtline's 200 OK to the caller.
    pub caller_ok: Sip,
    /// The operator's SIP peer.
    pub operator: SipPeer,
    /// The operator's RTP socket (in its answer).
    pub op_rtp: UdpSocket,
    /// courtline's INVITE to the operator.
    pub invite: Sip,
    /// The operator's Contact and Content-Type lines, for its responses.
    pub operator_headers: String,
}

impl BridgedCall {
    /// Calls the line, lets the operator answer and ACKs both legs.
    pub async fn start(rtp_ports: (u16, u16)) -> BridgedCall {
        let operator = SipPeer::bind().await;
        let op_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sb = TestSwitchboard::start(Options {
            operators: vec![format!("sip:operator@{}", operator.addr)],
            prompt_ms: 200,
            rtp_ports,
            ..Options::default()
        })
        .await;
        let mut caller = Caller::new(sb.sip).await;
        let caller_ok = caller.call("0").await;
        let invite = operator
            .expect_request("INVITE", Duration::from_secs(3))
            .await;
        operator
            .answer_invite(&invite, "op", &sdp(op_rtp.local_addr().unwrap(), "0"))
            .await;
        let operator_headers = format!(
            "Contact: <sip:operator@{}>\r\nContent-Type: application/sdp\r\n",
            operator.addr
        );
        BridgedCall {
            sb,
            caller,
            caller_ok,
            operator,
            op_rtp,
            invite,
            operator_headers,
        }
    }
}

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Rtp {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: Vec<u8>,
    /// Arrival time.
    pub at: Instant,
}

/// Waits until courtline relays RTP sent from `from` to its address `to`
/// onward to `at`: `from` sends a packet every 20 ms until `at` hears one,
/// and the test fails after `within`. With an operator's socket as `from` and
/// the caller's as `at`, it waits until the call task has taken the
/// operator's answer: a caller that hung up right after the operator's ACK
/// could otherwise be processed first, and the call recorded as never answered.
pub async fn relayed(from: &UdpSocket, to: SocketAddr, at: &UdpSocket, within: Duration) {
    const HEARD: u8 = 0x5a;
    let sends = within.as_millis() / 20;
    for seq in 0..u16::try_from(sends).unwrap_or(u16::MAX) {
        let packet = rtp_packet(
            0,
            seq,
            160 * u32::from(seq),
            0x0b1d9e,
            seq == 0,
            &[HEARD; 160],
        );
        from.send_to(&packet, to).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        while let Some((p, _)) =
            recv_rtp(at, deadline.saturating_duration_since(Instant::now())).await
        {
            if p.payload == [HEARD; 160] {
                return;
            }
        }
    }
    panic!(
        "no RTP relayed from {} over {to} within {within:?}",
        from.local_addr().unwrap()
    );
}

/// Receives one RTP packet within `wait`.
pub async fn recv_rtp(socket: &UdpSocket, wait: Duration) -> Option<(Rtp, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    let b = &buf[..n];
    Some((
        Rtp {
            marker: b[1] & 0x80 != 0,
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: b[12..].to_vec(),
            at: Instant::now(),
        },
        from,
    ))
}

/// Builds an RTP packet.
pub fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A self-signed certificate for 127.0.0.1 / localhost, written as PEM files;
/// returns their paths and the certificate's DER for clients to trust.
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.join("sip.crt");
    let key_path = dir.join("sip.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, cert.cert.der().to_vec())
}

/// A TLS client handshake over `tcp` with a server holding the certificate `der`.
pub async fn tls_handshake(
    tcp: tokio::net::TcpStream,
    der: Vec<u8>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let client = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// A SIP peer on a stream transport (TCP, or TLS over TCP): messages framed by Content-Length.
pub struct StreamPeer<S> {
    /// The connection.
    pub stream: S,
    /// Bytes read but not yet parsed.
    buffer: Vec<u8>,
    /// The remote address, reported as `Sip::from`.
    pub remote: SocketAddr,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> StreamPeer<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S, remote: SocketAddr) -> StreamPeer<S> {
        StreamPeer {
            stream,
            buffer: Vec::new(),
            remote,
        }
    }

    /// Sends raw text.
    pub async fn send(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(text.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Next complete message within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Sip> {
        use tokio::io::AsyncReadExt;
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                let body_len = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        let n = n.trim().to_ascii_lowercase();
                        (n == "content-length" || n == "l")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + body_len;
                if self.buffer.len() >= total {
                    let message: Vec<u8> = self.buffer.drain(..total).collect();
                    return Some(Sip::parse(&message, self.remote));
                }
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buffer.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Waits for a response with `status` to a request of `method`.
    pub async fn expect_response(&mut self, status: u16, method: &str, wait: Duration) -> Sip {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {status} to {method} within {wait:?}"));
            if msg.status() == status && msg.header("cseq").is_some_and(|c| c.ends_with(method)) {
                return msg;
            }
        }
    }

    /// Waits for a request with `method`.
    pub async fn expect_request(&mut self, method: &str, wait: Duration) -> Sip {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {method} within {wait:?}"));
            if msg.method() == method {
                return msg;
            }
        }
    }
}

/// A SIP request as raw text, built one header at a time: every test peer that
/// sends requests by hand (rather than through a SIP stack) writes them here, so
/// the start line, Via, Max-Forwards, Call-ID, CSeq and Content-Length are always
/// in step with each other.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Method and Request-URI.
    method: String,
    uri: String,
    /// Header lines in order, each without its CRLF.
    headers: Vec<String>,
    /// Content-Type and body, when there is one.
    body: Option<(String, String)>,
}

impl RawRequest {
    /// `method uri SIP/2.0`, Via from `me` with `branch`, Max-Forwards 70.
    pub fn new(
        method: &str,
        uri: impl std::fmt::Display,
        me: SocketAddr,
        branch: &str,
    ) -> RawRequest {
        RawRequest {
            method: method.to_owned(),
            uri: uri.to_string(),
            headers: vec![
                format!("Via: SIP/2.0/UDP {me};branch={branch}"),
                "Max-Forwards: 70".to_owned(),
            ],
            body: None,
        }
    }

    /// Adds `name: value`.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> RawRequest {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// From, To and Call-ID of a dialog (or of a request outside one).
    pub fn dialog(self, from: &str, to: &str, call_id: &str) -> RawRequest {
        self.header("From", from)
            .header("To", to)
            .header("Call-ID", call_id)
    }

    /// `CSeq: n METHOD`.
    pub fn cseq(self, n: u32) -> RawRequest {
        let method = self.method.clone();
        self.header("CSeq", format_args!("{n} {method}"))
    }

    /// A body of `content_type` (Content-Length is always written).
    pub fn body(mut self, content_type: &str, body: &str) -> RawRequest {
        self.body = Some((content_type.to_owned(), body.to_owned()));
        self
    }

    /// The request as it goes on the wire.
    pub fn text(&self) -> String {
        let mut text = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        for line in &self.headers {
            text.push_str(line);
            text.push_str("\r\n");
        }
        let (content_type, body) = match &self.body {
            Some((content_type, body)) => (content_type.as_str(), body.as_str()),
            None => ("", ""),
        };
        if !content_type.is_empty() {
            text.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        text
    }
}

/// A response to `request` as text (Via/From/To/Call-ID/CSeq echoed, To tag added).
pub fn response_text(
    request: &Sip,
    status: &str,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let mut text = format!("SIP/2.0 {status}\r\n");
    for via in request.headers_named("via") {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    let to = request.header("to").unwrap();
    let to = match to_tag {
        Some(tag) if !to.contains("tag=") => format!("{to};tag={tag}"),
        _ => to.to_string(),
    };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        request.header("from").unwrap(),
        request.header("call-id").unwrap(),
        request.header("cseq").unwrap(),
        body.len()
    ));
    text
}

/// The record the records service at `records` keeps of the call whose SIP
/// Call-ID is `sip_call_id`, waiting up to `wait` for it.
pub async fn record_of(records: SocketAddr, sip_call_id: &str, wait: Duration) -> CallRecord {
    let mut client = RecordsServiceClient::connect(format!("http://{}", records))
        .await
        .unwrap();
    let deadline = Instant::now() + wait;
    loop {
        let page = client
            .list_calls(ListCallsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(r) = page
            .records
            .into_iter()
            .find(|r| r.sip_call_id == sip_call_id)
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no record for {sip_call_id} within {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
