//! The SIP side: a thin adapter over rsipstack, which owns RFC 3261
//! transactions, dialogs and retransmissions. Runs in the switchboard process;
//! protocol pieces only (it imports neither `call` nor the endpoint).
//!
//! - `shield`: ACLs, per-source rate limits, bans for floods and scanners (sans-IO).
//! - `forwarded`: which caller address a request is judged by behind a trusted proxy (sans-IO).
//! - `inbound_auth`: digest authentication of callers from untrusted sources (sans-IO).
//! - `dialog_states`: one rsipstack dialog-state channel, routed to each dialog's call.
//! - `caller_invites`: one channel for every caller dialog's answers, routed to its INVITE while it runs; an ACKed 2xx is kept small.
//! - `guard`: runs the shield, then checks every datagram before the stack sees it (400s for malformed input).
//! - `arrivals`: when each new call's INVITE was read, for shedding calls under overload.
//! - `stream_guard`: the shield on TCP and TLS (at accept and per message).
//! - `invite_outcome`: an INVITE's outcome; once answered, only its ACK is kept (not its transaction).
//! - `leg`: small conversions between rsipstack types and courtline's.
//! - `qualify`: OPTIONS keep-alive toward operators; down ones leave hunt lists.
//! - `registration`: courtline registered as an account on the court's PBX.
//! - `session_timer`: RFC 4028 negotiation and timing (sans-IO).

pub mod arrivals;
pub(crate) mod caller_invites;
pub(crate) mod dialog_states;
pub mod forwarded;
pub mod guard;
pub mod inbound_auth;
pub mod invite_outcome;
pub mod leg;
pub mod probe_header;
pub mod qualify;
pub mod registration;
pub mod session_timer;
pub mod shield;
pub mod stream_guard;

/// Methods courtline handles, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";
