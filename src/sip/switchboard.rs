//! The SIP endpoint of the switchboard: binds the socket, runs rsipstack, admits
//! or refuses new calls, answers OPTIONS and routes in-dialog requests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::guard::GuardedUdpSocket;
use super::leg::{
    caller_identity, content_refusal, dialled_number, has_to_tag, header, local_ip_toward,
};
use crate::call::session::{CallSetup, CallSlot};
use crate::call::{CallFacts, CallFlow};
use crate::config::Config;
use crate::media::ports::RtpPorts;
use crate::media::prompt::Prompt;
use crate::media::tone::ToneFrames;
use crate::records::client::RecordSender;
use crate::sdp::{RemoteMedia, SdpError};

/// Methods courtline handles, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

/// Why the switchboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchboardError {
    /// The SIP port could not be bound.
    #[error("cannot listen for SIP on {addr}: {source}. Is another SIP server running there? Change [sip] listen or stop it")]
    Bind {
        /// Address from `[sip] listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// rsipstack refused to start.
    #[error("SIP stack failed to start: {0}")]
    Stack(String),
    /// The ringback settings are unusable (normally caught by `courtline check`).
    #[error("[media.ringback]: {0}")]
    Ringback(String),
}

/// Everything calls share, immutable while the switchboard runs.
pub(crate) struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Loaded prompts by id.
    pub prompts: HashMap<String, Prompt>,
    /// Pre-encoded ringback.
    pub ringback: Arc<ToneFrames>,
    /// RTP port range.
    pub ports: RtpPorts,
    /// Where finished call records go.
    pub records: RecordSender,
    /// rsipstack's dialog table.
    pub dialog_layer: Arc<DialogLayer>,
    /// Address the SIP socket is bound to.
    pub sip_addr: SocketAddr,
    /// `[media] advertise_address`, parsed.
    pub advertise: Option<IpAddr>,
    /// Calls in progress, for `max_calls`.
    pub active: Arc<AtomicUsize>,
    /// Cancelled on shutdown; every call task watches a child of it.
    pub shutdown: CancellationToken,
}

/// A running SIP switchboard.
pub struct Switchboard {
    /// State shared with call tasks.
    shared: Arc<Shared>,
    /// rsipstack's endpoint (transactions, transport).
    endpoint: rsipstack::transaction::Endpoint,
}

impl Switchboard {
    /// Binds the SIP socket and prepares the stack; call [`Switchboard::run`] to serve.
    pub async fn bind(
        config: Config,
        prompts: HashMap<String, Prompt>,
        records: RecordSender,
        shutdown: CancellationToken,
    ) -> Result<Switchboard, SwitchboardError> {
        let listen = config.sip.listen;
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|source| SwitchboardError::Bind {
                addr: listen,
                source,
            })?;
        let sip_addr = socket
            .local_addr()
            .map_err(|source| SwitchboardError::Bind {
                addr: listen,
                source,
            })?;
        let guarded: Arc<dyn rsipstack::platform::net::UdpSocket> =
            Arc::new(GuardedUdpSocket::new(socket));
        let stack_token = shutdown.child_token();
        let connection = UdpConnection::from_socket(guarded, None, Some(stack_token.clone()))
            .await
            .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
        let transport_layer = TransportLayer::new(stack_token.clone());
        transport_layer.add_transport(connection.into());
        let t1 = Duration::from_millis(config.sip.t1_ms);
        let timers = rsipstack::transaction::endpoint::EndpointOption {
            t1,
            t1x64: t1 * 64,
            ..Default::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_option(timers)
            .with_cancel_token(stack_token)
            .with_transport_layer(transport_layer)
            .with_user_agent(&config.sip.user_agent)
            .build();
        let dialog_layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let ringback = ToneFrames::ringback(&config.media.ringback)
            .map_err(|e| SwitchboardError::Ringback(e.to_string()))?;
        let ports = RtpPorts::new(
            sip_addr.ip(),
            config
                .rtp_port_range()
                .map_err(|e| SwitchboardError::Stack(e.to_string()))?,
        );
        let advertise = config.media.advertise_address.parse().ok();
        Ok(Switchboard {
            shared: Arc::new(Shared {
                config,
                prompts,
                ringback: Arc::new(ringback),
                ports,
                records,
                dialog_layer,
                sip_addr,
                advertise,
                active: Arc::new(AtomicUsize::new(0)),
                shutdown,
            }),
            endpoint,
        })
    }

    /// The bound SIP address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.sip_addr
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> Arc<AtomicUsize> {
        self.shared.active.clone()
    }

    /// Serves SIP until the shutdown token is cancelled.
    pub async fn run(self) -> Result<(), SwitchboardError> {
        let mut incoming = self
            .endpoint
            .incoming_transactions()
            .map_err(|e| SwitchboardError::Stack(e.to_string()))?;
        info!(
            listen = %self.shared.sip_addr,
            lines = self.shared.config.lines.len(),
            max_calls = self.shared.config.sip.max_calls,
            "switchboard listening for SIP (UDP)"
        );
        let serve = self.endpoint.serve();
        tokio::pin!(serve);
        loop {
            tokio::select! {
                _ = &mut serve => break,
                _ = self.shared.shutdown.cancelled() => break,
                tx = incoming.recv() => match tx {
                    Some(tx) => route(&self.shared, tx),
                    None => break,
                },
            }
        }
        info!("switchboard stopped accepting calls");
        Ok(())
    }
}

/// Sends each new transaction where it belongs.
fn route(shared: &Arc<Shared>, mut tx: Transaction) {
    let method = tx.original.method;
    if has_to_tag(&tx.original) || matches!(method, Method::Ack | Method::Bye | Method::Cancel) {
        // In-dialog: the dialog handles it (BYE -> Terminated, ACK -> Confirmed).
        match shared.dialog_layer.match_dialog(&tx) {
            Some(mut dialog) => {
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        debug!(error = %e, "in-dialog request failed");
                    }
                });
            }
            None if method == Method::Ack => {}
            None => {
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                });
            }
        }
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = match method {
            Method::Invite => admit(&shared, tx).await,
            Method::Options => {
                let headers = vec![
                    header("Allow", ALLOW),
                    header("Accept", "application/sdp"),
                    header("Supported", ""),
                ];
                tx.reply_with(StatusCode::OK, headers, None).await
            }
            Method::Register
            | Method::Subscribe
            | Method::Publish
            | Method::Message
            | Method::Refer
            | Method::Notify
            | Method::Info
            | Method::Update
            | Method::PRack => {
                tx.reply_with(
                    StatusCode::MethodNotAllowed,
                    vec![header("Allow", ALLOW)],
                    None,
                )
                .await
            }
            _ => {
                tx.reply_with(
                    StatusCode::NotImplemented,
                    vec![header("Allow", ALLOW)],
                    None,
                )
                .await
            }
        };
        if let Err(e) = result {
            debug!(method = %method, error = %e, "could not answer request");
        }
    });
}

/// Decides whether a new INVITE becomes a call, and starts it.
async fn admit(shared: &Arc<Shared>, mut tx: Transaction) -> rsipstack::Result<()> {
    let request = &tx.original;
    let source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok());
    let identity = caller_identity(request);
    let number = dialled_number(request);
    let mut facts = CallFacts {
        call_id: uuid::Uuid::new_v4().to_string(),
        sip_call_id: request
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default(),
        line_number: number.clone(),
        caller_number: identity.number,
        caller_display_name: identity.display_name,
        caller_source: source.map(|s| s.to_string()).unwrap_or_default(),
        user_agent: identity.user_agent,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        ..CallFacts::default()
    };

    // No call goes unrecorded: while the records spool cannot be written, refuse.
    if !shared.records.spool_healthy()
        && shared.config.records.on_spool_failure == crate::config::SpoolFailurePolicy::Reject
    {
        tracing::error!(line = %number, caller = %facts.caller_number, "records spool cannot be written: 503 ([records] on_spool_failure = \"reject\")");
        let retry = shared.config.sip.retry_after_s.to_string();
        return refuse(
            shared,
            &mut tx,
            &facts,
            StatusCode::ServiceUnavailable,
            vec![header("Retry-After", retry)],
        )
        .await;
    }

    // Admission: a slot first, so a flood cannot overshoot max_calls.
    let Some(slot) = CallSlot::take(&shared.active, shared.config.sip.max_calls) else {
        warn!(line = %number, caller = %facts.caller_number, max_calls = shared.config.sip.max_calls, "switchboard full: 503");
        let retry = shared.config.sip.retry_after_s.to_string();
        return refuse(
            shared,
            &mut tx,
            &facts,
            StatusCode::ServiceUnavailable,
            vec![header("Retry-After", retry)],
        )
        .await;
    };
    let Some(line) = shared.config.line(&number).cloned() else {
        info!(line = %number, caller = %facts.caller_number, "no such line: 404");
        return refuse(shared, &mut tx, &facts, StatusCode::NotFound, vec![]).await;
    };
    facts.court_name = line.court.clone();
    let Some(prompt) = shared.prompts.get(&line.prompt).cloned() else {
        // `Config::validate` and prompt loading make this impossible; refuse loudly rather than skip the warning.
        warn!(line = %number, prompt = %line.prompt, "line's prompt is not loaded: 500");
        return refuse(
            shared,
            &mut tx,
            &facts,
            StatusCode::ServerInternalError,
            vec![],
        )
        .await;
    };
    facts.prompt_id = prompt.id.clone();
    facts.prompt_sha256 = prompt.sha256.clone();
    facts.prompt_length_ms = prompt.frames.duration_ms();
    facts.operators = line.operator.uris();
    facts.ring_timeout = Duration::from_secs(u64::from(line.ring_timeout_s));
    facts.answer_delay = Duration::from_millis(shared.config.sip.answer_delay_ms);

    if let Some(status) = content_refusal(request) {
        info!(line = %number, caller = %facts.caller_number, %status, "INVITE content courtline cannot take");
        let accept = header("Accept", "application/sdp");
        return refuse(shared, &mut tx, &facts, status, vec![accept]).await;
    }
    // An INVITE without a body is a delayed offer: we offer in the 200 OK and
    // the caller answers in the ACK.
    let offer = if request.body.is_empty() {
        None
    } else {
        match RemoteMedia::parse(&request.body).and_then(|offer| {
            let negotiated = offer.negotiate()?;
            Ok((offer, negotiated))
        }) {
            Ok(agreed) => Some(agreed),
            Err(SdpError::Malformed(problem)) => {
                info!(line = %number, caller = %facts.caller_number, %problem, "bad SDP: 400");
                let warning = header("Warning", format!("399 courtline \"{problem}\""));
                return refuse(
                    shared,
                    &mut tx,
                    &facts,
                    StatusCode::BadRequest,
                    vec![warning],
                )
                .await;
            }
            Err(e @ SdpError::NoCommonCodec { .. }) => {
                info!(line = %number, caller = %facts.caller_number, error = %e, "488");
                let warning = header("Warning", "305 courtline \"Incompatible media format\"");
                return refuse(
                    shared,
                    &mut tx,
                    &facts,
                    StatusCode::NotAcceptableHere,
                    vec![warning],
                )
                .await;
            }
        }
    };
    if let Some((_, negotiated)) = &offer {
        facts.codec = negotiated.codec.encoding_name().to_string();
    }
    let rtp_socket = match shared.ports.bind() {
        Ok(socket) => socket,
        Err(e) => {
            warn!(line = %number, error = %e, "503");
            let retry = shared.config.sip.retry_after_s.to_string();
            return refuse(
                shared,
                &mut tx,
                &facts,
                StatusCode::ServiceUnavailable,
                vec![header("Retry-After", retry)],
            )
            .await;
        }
    };
    let local_ip = local_ip_toward(
        source
            .or(offer.as_ref().map(|(o, _)| o.rtp_addr))
            .map(|s| s.ip())
            .unwrap_or(shared.sip_addr.ip()),
        shared.sip_addr.ip(),
        shared.advertise,
    );
    let setup = CallSetup {
        shared: shared.clone(),
        facts,
        prompt,
        offer,
        rtp_socket,
        local_ip,
        slot,
        received: Instant::now(),
    };
    crate::call::session::start(setup, tx);
    Ok(())
}

/// Refuses an INVITE with `status` and records the refusal.
async fn refuse(
    shared: &Shared,
    tx: &mut Transaction,
    facts: &CallFacts,
    status: StatusCode,
    headers: Vec<rsipstack::sip::Header>,
) -> rsipstack::Result<()> {
    let code = u16::from(status.clone());
    shared.records.send(CallFlow::rejected(facts, code));
    tx.reply_with(status, headers, None).await
}
