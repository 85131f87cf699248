//! The SIP side: a thin adapter over rsipstack, which owns RFC 3261
//! transactions, dialogs and retransmissions.
//!
//! - `shield`: ACLs, per-source rate limits, bans for floods and scanners (sans-IO).
//! - `inbound_auth`: digest authentication of callers from untrusted sources (sans-IO).
//! - `dialog_states`: one rsipstack dialog-state channel, routed to each dialog's call.
//! - `guard`: runs the shield, then checks every datagram before the stack sees it (400s for malformed input).
//! - `stream_guard`: the shield on TCP and TLS (at accept and per message).
//! - `leg`: small conversions between rsipstack types and courtline's.
//! - `qualify`: OPTIONS keep-alive toward operators; down ones leave hunt lists.
//! - `registration`: courtline registered as an account on the court's PBX.
//! - `session_timer`: RFC 4028 negotiation and timing (sans-IO).

pub(crate) mod dialog_states;
pub mod guard;
pub mod inbound_auth;
pub mod leg;
pub mod qualify;
pub mod registration;
pub mod session_timer;
pub mod shield;
pub mod stream_guard;

/// Methods courtline handles, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

/// Checks an operator URI from the config; the error says what is wrong.
pub fn check_operator_uri(uri: &str) -> Result<(), String> {
    let parsed = rsipstack::sip::Uri::try_from(uri).map_err(|_| "is not a SIP URI".to_string())?;
    match parsed.scheme {
        Some(rsipstack::sip::Scheme::Sip) => {}
        Some(rsipstack::sip::Scheme::Sips) => {
            return Err("uses sips:, but TLS to operators is not supported yet".into())
        }
        _ => return Err("must start with sip:".into()),
    }
    if parsed.host_with_port.to_string().is_empty() {
        return Err("has no host".into());
    }
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
    }
}
