//! The SIP side: a thin adapter over rsipstack, which owns RFC 3261
//! transactions, dialogs and retransmissions.
//!
//! - `shield`: ACLs, per-source rate limits, bans for floods and scanners (sans-IO).
//! - `inbound_auth`: digest authentication of callers from untrusted sources (sans-IO).
//! - `guard`: runs the shield, then checks every datagram before the stack sees it (400s for malformed input).
//! - `stream_guard`: the shield on TCP and TLS (at accept and per message).
//! - `switchboard`: the endpoint, admission of new calls (404/488/503), OPTIONS,
//!   and routing of in-dialog requests.
//! - `leg`: small conversions between rsipstack types and courtline's.
//! - `qualify`: OPTIONS keep-alive toward operators; down ones leave hunt lists.
//! - `registration`: courtline registered as an account on the court's PBX.
//! - `session_timer`: RFC 4028 negotiation and timing (sans-IO).

pub mod guard;
pub mod inbound_auth;
pub mod leg;
pub mod qualify;
pub mod registration;
pub mod session_timer;
pub mod shield;
pub mod stream_guard;
pub mod switchboard;
pub mod uri;

pub use switchboard::{Switchboard, SwitchboardError};

/// Checks an operator URI from the config (fully: see [`uri::parse`]); the
/// error says what is wrong.
pub fn check_operator_uri(text: &str) -> Result<(), String> {
    let parsed = uri::parse(text)?;
    if parsed.secure {
        return Err("uses sips:, but TLS to operators is not supported yet".into());
    }
    if parsed.user.is_none() {
        return Err("has no user part: an operator is sip:user@host".into());
    }
    // rsipstack is what dials it: it must read the URI too.
    rsipstack::sip::Uri::try_from(text).map_err(|_| "is not a SIP URI".to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_operator_uri;

    #[test]
    fn operator_uris() {
        assert!(check_operator_uri("sip:operator@127.0.0.1:5090").is_ok());
        assert!(check_operator_uri("sip:desk1@pbx.court.example").is_ok());
        assert!(check_operator_uri("operator at desk 3").is_err());
        assert!(check_operator_uri("http://example.com").is_err());
        assert!(check_operator_uri("sip:operator@127.0.0.1:50a90").is_err());
        assert!(check_operator_uri("sip:operator127.0.0.1:5090").is_err());
        assert!(check_operator_uri("sip:192.0.2.10:5060").is_err());
    }
}
