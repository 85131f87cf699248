//! `courtline probe` and the probes `courtline serve` runs on a schedule
//! (`[probe] every_minutes`): a real SIP call over UDP to a line through the
//! switchboard's SIP port, signed as a probe ([`probe_header`]) so it is
//! recorded as one and nobody but `[probe] target` is dialled. It listens to
//! the warning and checks it against the configured playlist by correlation
//! ([`heard::judge`]), then hangs up. What is wrong is said with the line:
//! no answer, silence, wrong prompt version, clipped start, cut short.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use rtp_rs::RtpReader;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::switchboard::endpoint::Monitor;
use crate::switchboard::media::codec::Codec;
use crate::switchboard::media::heard::{self, Expected, Failure, Heard, Match};
use crate::switchboard::media::prompt::{LinePlaylists, Playlist};
use crate::switchboard::sdp::{Direction, LocalMedia, RemoteMedia};
use crate::switchboard::sip::leg::local_ip_toward;
use crate::switchboard::sip::probe_header::{self, ProbeKey};

/// How long the switchboard has to answer (on top of `[sip] answer_delay_ms`).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the first audio after the answer.
const FIRST_AUDIO_TIMEOUT: Duration = Duration::from_secs(3);
/// How much longer than the playlist to listen (the packets' way, jitter).
const LISTEN_MARGIN: Duration = Duration::from_millis(800);
/// How long hanging up may take.
const HANG_UP_TIMEOUT: Duration = Duration::from_secs(2);
/// Before the first scheduled round: the switchboard has just started.
const FIRST_ROUND_DELAY: Duration = Duration::from_secs(2);

/// `courtline probe` arguments.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The line to call; every configured line when left out.
    #[arg(long)]
    pub line: Option<String>,
    /// Where the switchboard takes SIP; default `[sip] listen` (loopback for an unspecified address).
    #[arg(long)]
    pub to: Option<SocketAddr>,
    /// Write what was heard to this WAV file (8 kHz mono), with one line: its number.
    #[arg(long)]
    pub save: Option<PathBuf>,
}

/// What a probe heard when the line played its warning right.
#[derive(Debug, Clone, PartialEq)]
pub struct Passed {
    /// How well it matched.
    pub matched: Match,
    /// The prompts it heard, as `id version (sha256 prefix)`.
    pub prompts: String,
    /// The playlist's length, ms.
    pub expected_ms: u32,
}

/// Everything one probe call needs: where to call, the key to sign with, and
/// what each line should play.
#[derive(Clone)]
pub struct Prober {
    /// Lines, their office hours and `[sip] answer_delay_ms`.
    config: Arc<Config>,
    /// What each line plays, loaded as the switchboard loads it.
    playlists: LinePlaylists,
    /// Signs the probe header.
    key: ProbeKey,
    /// The switchboard's SIP address.
    switchboard: SocketAddr,
}

/// The key probes sign with: `[probe] key`, or the switchboard's key file.
pub fn probe_key(config: &Config) -> anyhow::Result<ProbeKey> {
    if !config.probe.key.is_empty() {
        return Ok(ProbeKey::new(config.probe.key.as_bytes()));
    }
    let path = config.probe_key_path();
    ProbeKey::load(&path).with_context(|| {
        format!(
            "cannot read the probe key {}: run the probe as courtline serve's user on its machine \
             (the switchboard makes the file when it starts), or set the same [probe] key for both",
            path.display()
        )
    })
}

impl Prober {
    /// A prober calling `switchboard` with `key`, expecting what `config` and `playlists` say.
    pub fn new(
        config: Arc<Config>,
        playlists: LinePlaylists,
        key: ProbeKey,
        switchboard: SocketAddr,
    ) -> Prober {
        Prober {
            config,
            playlists,
            key,
            switchboard,
        }
    }

    /// What `line` should play now (its office hours decide which playlist).
    fn playlist(&self, line: &str) -> Option<Arc<Playlist>> {
        let configured = self.config.line(line)?;
        let playlists = if self.config.is_staffed(configured, chrono::Utc::now()) {
            &self.playlists.in_hours
        } else {
            &self.playlists.after_hours
        };
        playlists.get(line).cloned()
    }

    /// Calls `line` and checks its warning; `save` gets what was heard.
    pub async fn probe(&self, line: &str, save: Option<&Path>) -> Result<Passed, Failure> {
        let playlist = self.playlist(line);
        let heard = self.call(line, playlist.as_deref()).await?;
        if let Some(path) = save {
            if let Err(e) = save_wav(path, heard.heard.samples()) {
                warn!(file = %path.display(), error = %e, "cannot save what the probe heard");
            }
        }
        let Some(playlist) = playlist else {
            return Err(Failure::Unchecked(format!(
                "line {line} answered, but it is not in this configuration"
            )));
        };
        let expected = Expected::of(&playlist, heard.codec).ok_or_else(|| {
            Failure::Unchecked(format!(
                "answered in {}, which the probe did not offer",
                heard.codec.encoding_name()
            ))
        })?;
        let matched = heard::judge(&expected, &heard.heard)?;
        let prompts = playlist
            .prompts()
            .iter()
            .map(|p| {
                format!(
                    "{} version {:?} (sha256 {}…)",
                    p.id,
                    p.version,
                    &p.sha256[..12.min(p.sha256.len())]
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Passed {
            matched,
            prompts,
            expected_ms: expected.duration_ms(),
        })
    }

    /// The SIP call itself: INVITE, listen, hang up.
    async fn call(&self, line: &str, playlist: Option<&Playlist>) -> Result<Listened, Failure> {
        let stack = ProbeStack::start(self.switchboard)
            .await
            .map_err(|e| Failure::NoAnswer(format!("cannot make the call: {e}")))?;
        let result = stack.call(self, line, playlist).await;
        stack.stop();
        result
    }
}

/// What a call heard, and in which codec.
struct Listened {
    /// The audio.
    heard: Heard,
    /// The codec the switchboard answered with.
    codec: Codec,
}

/// A SIP user agent of its own for one probe call, on an ephemeral UDP port.
struct ProbeStack {
    /// Stops the endpoint and its transport.
    stop: CancellationToken,
    /// Makes the call.
    dialogs: Arc<DialogLayer>,
    /// Our SIP address.
    local: SocketAddr,
}

impl ProbeStack {
    async fn start(switchboard: SocketAddr) -> anyhow::Result<ProbeStack> {
        let stop = CancellationToken::new();
        let ip = local_ip_toward(
            switchboard.ip(),
            if switchboard.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
            },
            None,
        );
        let udp = UdpConnection::create_connection(
            SocketAddr::new(ip, 0),
            None,
            Some(stop.child_token()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind a SIP port on {ip}: {e}"))?;
        let local = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let transport = TransportLayer::new(stop.clone());
        transport.add_transport(udp.into());
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(stop.clone())
            .with_transport_layer(transport)
            .with_user_agent("courtline-probe")
            .build();
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let mut incoming = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let router = dialogs.clone();
        tokio::spawn(async move {
            let serve = endpoint.serve();
            tokio::pin!(serve);
            loop {
                tokio::select! {
                    _ = &mut serve => break,
                    tx = incoming.recv() => {
                        let Some(mut tx) = tx else { break };
                        // Only the switchboard's BYE (or a re-INVITE) comes here.
                        match router.match_dialog(&tx) {
                            Some(mut dialog) => {
                                tokio::spawn(async move { let _ = dialog.handle(&mut tx).await; });
                            }
                            None => {
                                tokio::spawn(async move {
                                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                                });
                            }
                        }
                    }
                }
            }
        });
        Ok(ProbeStack {
            stop,
            dialogs,
            local,
        })
    }

    fn stop(&self) {
        self.stop.cancel();
    }

    async fn call(
        &self,
        prober: &Prober,
        line: &str,
        playlist: Option<&Playlist>,
    ) -> Result<Listened, Failure> {
        let no_answer = |why: String| Failure::NoAnswer(why);
        let rtp = UdpSocket::bind(SocketAddr::new(self.local.ip(), 0))
            .await
            .map_err(|e| no_answer(format!("cannot bind an RTP port: {e}")))?;
        let rtp_addr = rtp
            .local_addr()
            .map_err(|e| no_answer(format!("cannot bind an RTP port: {e}")))?;
        let offer = LocalMedia {
            rtp_addr,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            telephone_event: None,
            session_id: rand::random::<u32>().into(),
            version: 1,
            direction: Direction::SendRecv,
        };
        let call_id = format!("{}@courtline-probe", uuid::Uuid::new_v4());
        let uri = |text: String| {
            Uri::try_from(text.as_str()).map_err(|e| no_answer(format!("bad URI {text}: {e}")))
        };
        let caller = uri(format!("sip:courtline-probe@{}", self.local))?;
        let option = InviteOption {
            caller_display_name: Some("courtline probe".into()),
            callee: uri(format!("sip:{line}@{}", prober.switchboard))?,
            contact: caller.clone(),
            caller,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.render().into_bytes()),
            call_id: Some(call_id.clone()),
            headers: Some(vec![Header::Other(
                probe_header::HEADER.into(),
                prober.key.sign(&call_id, SystemTime::now()),
            )]),
            ..InviteOption::default()
        };
        let (states_tx, mut states) = self.dialogs.new_dialog_state_channel();
        let (dialog, mut outcome) = self
            .dialogs
            .do_invite_async(option, states_tx)
            .map_err(|e| no_answer(format!("cannot send the INVITE: {e}")))?;
        let wait = ANSWER_TIMEOUT + Duration::from_millis(prober.config.sip.answer_delay_ms);
        let answer_by = Instant::now() + wait;
        // The answer's SDP: from a 183 (an early-media line plays the warning
        // before it answers) or from the 200 OK.
        let mut states_open = true;
        let sdp = loop {
            tokio::select! {
                state = states.recv(), if states_open => match state {
                    Some(DialogState::Early(_, response)) if !response.body.is_empty() => break response.body,
                    None => states_open = false,
                    _ => {}
                },
                result = &mut outcome => {
                    match result {
                        Ok(Ok((_, Some(response)))) if response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => break response.body,
                        Ok(Ok((_, Some(response)))) => return Err(no_answer(response.status_code.to_string())),
                        Ok(Ok((_, None))) => return Err(no_answer("no final response".into())),
                        Ok(Err(e)) => return Err(no_answer(e.to_string())),
                        Err(e) => return Err(no_answer(e.to_string())),
                    }
                }
                () = tokio::time::sleep_until(answer_by) => {
                    let _ = tokio::time::timeout(HANG_UP_TIMEOUT, dialog.hangup()).await;
                    return Err(no_answer(format!("nothing from {} within {} s", prober.switchboard, wait.as_secs())));
                }
            }
        };
        let codec = RemoteMedia::parse(&sdp)
            .and_then(|answer| answer.negotiate(&[Codec::Pcma, Codec::Pcmu]))
            .map(|agreed| agreed.codec)
            .map_err(|e| no_answer(format!("answered with SDP the probe cannot use: {e}")))?;
        let expected_ms = playlist.map_or(0, |p| u64::from(p.duration_ms()));
        let heard = listen(&rtp, codec, Duration::from_millis(expected_ms), &mut states).await;
        // Hang up before the operator would be dialled (or the probe target's
        // call has shown the way through): CANCEL while early, BYE once answered.
        if let Err(e) = tokio::time::timeout(HANG_UP_TIMEOUT, dialog.hangup()).await {
            warn!(line, error = %e, "the probe's hang-up got no answer");
        }
        self.dialogs.remove_dialog(&dialog.id());
        Ok(Listened { heard, codec })
    }
}

/// Takes in the warning's RTP until it has all been heard (plus a margin),
/// nothing has come for [`FIRST_AUDIO_TIMEOUT`], or the switchboard hangs up.
async fn listen(
    rtp: &UdpSocket,
    codec: Codec,
    expected: Duration,
    states: &mut rsipstack::dialog::dialog::DialogStateReceiver,
) -> Heard {
    let limit = expected + LISTEN_MARGIN;
    let mut heard = Heard::new(u32::try_from(limit.as_millis()).unwrap_or(u32::MAX));
    let law = codec.law();
    let started = Instant::now();
    let mut buffer = [0u8; 2048];
    loop {
        let deadline = if heard.packets() == 0 {
            started + FIRST_AUDIO_TIMEOUT
        } else {
            started + FIRST_AUDIO_TIMEOUT + limit
        };
        tokio::select! {
            received = rtp.recv_from(&mut buffer) => {
                let Ok((len, _)) = received else { continue };
                let Ok(packet) = RtpReader::new(&buffer[..len]) else { continue };
                if let (Some(law), true) = (law, packet.payload_type() == codec.payload_type()) {
                    heard.add(packet.timestamp(), packet.payload(), law);
                }
                if heard.duration_ms() >= u32::try_from(limit.as_millis()).unwrap_or(u32::MAX) {
                    return heard;
                }
            }
            state = states.recv() => {
                if matches!(state, Some(DialogState::Terminated(..)) | None) {
                    return heard;
                }
            }
            () = tokio::time::sleep_until(deadline) => return heard,
        }
    }
}

/// Writes `samples` as an 8 kHz mono WAV.
fn save_wav(path: &Path, samples: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for &sample in samples {
        writer.write_sample(sample)?;
    }
    writer.finalize()
}

/// The line a probe prints or logs on success.
fn passed_text(line: &str, passed: &Passed) -> String {
    format!(
        "line {line}: heard the warning whole ({:.1} s: {}), correlation {:.2}, {} ms lost",
        f64::from(passed.expected_ms) / 1000.0,
        passed.prompts,
        passed.matched.correlation,
        passed.matched.lost_ms
    )
}

/// `courtline probe`.
pub async fn run(config_path: &Path, args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    // What the switchboard plays now: the prompt versions in force at this moment.
    let live = crate::cli::serve::load_live(config)
        .map_err(|problems| anyhow::anyhow!(crate::cli::serve::prompt_problems_text(&problems)))?;
    let playlists = live.playlists.at(chrono::Utc::now()).clone();
    let config = Config::clone(&live.config);
    let key = probe_key(&config)?;
    let switchboard = args.to.unwrap_or_else(|| reachable(config.sip.listen));
    let lines: Vec<String> = match &args.line {
        Some(line) => vec![line.clone()],
        None => config.lines.iter().map(|l| l.number.clone()).collect(),
    };
    let prober = Prober::new(Arc::new(config), playlists, key, switchboard);
    let mut failed = false;
    for line in &lines {
        match prober.probe(line, args.save.as_deref()).await {
            Ok(passed) => println!("✓ {}", passed_text(line, &passed)),
            Err(failure) => {
                eprintln!("✗ line {line}: {failure}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The probes `courtline serve` runs every `[probe] every_minutes`. Each round
/// follows the configuration in force then (a reload may change the lines, the
/// prompts or the schedule) and expects the prompt versions in force then.
pub struct Schedule {
    /// Signs the probe header: the key file lives beside the spool, which only a
    /// restart can move, so the start-up configuration names it.
    config: Arc<Config>,
}

impl Schedule {
    /// The schedule `config` asks for, if any.
    pub fn of(config: &Config) -> Option<Schedule> {
        (config.probe.every_minutes > 0).then(|| Schedule {
            config: Arc::new(config.clone()),
        })
    }

    /// Probes each scheduled line in turn, at once and then every
    /// `every_minutes`, setting `courtline_probe_success` and logging failures,
    /// until `shutdown`.
    pub fn spawn(self, switchboard: SocketAddr, monitor: Monitor, shutdown: CancellationToken) {
        let key = match probe_key(&self.config) {
            Ok(key) => key,
            Err(e) => {
                error!("scheduled probes are off: {e:#}");
                return;
            }
        };
        let switchboard = reachable(switchboard);
        tokio::spawn(async move {
            let mut next = Instant::now() + FIRST_ROUND_DELAY;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(next) => {}
                }
                let live = monitor.live();
                let config = live.config.clone();
                // Turned off by a reload: look again a minute later.
                next += Duration::from_secs(u64::from(config.probe.every_minutes.max(1)) * 60);
                if config.probe.every_minutes == 0 {
                    continue;
                }
                let lines = config.probe.scheduled_lines(&config);
                let playlists = live.playlists.at(chrono::Utc::now()).clone();
                let prober = Prober::new(config, playlists, key.clone(), switchboard);
                for line in &lines {
                    // Draining: new calls get 503, which says nothing about the line.
                    if shutdown.is_cancelled() || monitor.readiness(true).draining {
                        return;
                    }
                    let outcome = prober.probe(line, None).await;
                    let at = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    monitor.probe_finished(line, outcome.is_ok(), at);
                    match outcome {
                        Ok(passed) => {
                            info!(line = %line, "synthetic probe passed: {}", passed_text(line, &passed))
                        }
                        Err(failure) => {
                            error!(line = %line, problem = %failure, "synthetic probe failed: line {line}: {failure}")
                        }
                    }
                }
            }
        });
    }
}

/// A SIP listen address as a probe on this machine reaches it (loopback for an unspecified one).
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}
