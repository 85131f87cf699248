//! Outbound registration: courtline as an account on the court's PBX.
//!
//! Many court PBXs route their main number to a registered extension rather
//! than to a static trunk. courtline then keeps a binding with the registrar
//! (digest auth MD5 or SHA-256 with qop=auth, refresh at 75% of the granted
//! expiry, back-off after failures — rsipstack's `Registration::keep_alive`)
//! and logs, in words an admin can act on, why registration fails.

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::{RefreshOutcome, Registration};
use rsipstack::sip::{StatusCode, Uri};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RegistrationConfig;
use crate::switchboard::metrics::Metrics;

/// Keeps courtline registered until `shutdown`, then removes the binding;
/// `courtline_registration_up` follows the state.
pub async fn run(
    endpoint: EndpointInnerRef,
    config: RegistrationConfig,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let up = |state: bool| metrics.registration_changed(&config.username, &config.registrar, state);
    up(false);
    let Ok(registrar) = Uri::try_from(config.registrar.as_str()) else {
        // `Config::validate` refuses such a URI; nothing to do if it slipped through.
        warn!(registrar = %config.registrar, "registration disabled: the registrar is not a SIP URI");
        return;
    };
    let credential = Credential {
        username: config.username.clone(),
        password: config.password.clone(),
        realm: None,
        auth_username: (!config.auth_username.is_empty()).then(|| config.auth_username.clone()),
    };
    let mut registration = Registration::new(endpoint, Some(credential));
    // Logged once per state change, not on every refresh.
    let mut registered = false;
    registration
        .keep_alive(registrar.clone(), config.expires_s, shutdown.clone(), |outcome| match outcome {
            RefreshOutcome::Registered(response) => {
                if !registered {
                    info!(
                        registrar = %config.registrar,
                        user = %config.username,
                        status = %response.status_code,
                        "registered with the PBX"
                    );
                    up(true);
                }
                registered = true;
            }
            RefreshOutcome::Rejected(response) => {
                registered = false;
                up(false);
                warn!(
                    registrar = %config.registrar,
                    user = %config.username,
                    status = %response.status_code,
                    advice = rejection_advice(&response.status_code),
                    "registration refused; retrying with back-off"
                );
            }
            RefreshOutcome::Failed(error) => {
                registered = false;
                up(false);
                warn!(
                    registrar = %config.registrar,
                    error = %error,
                    "registrar unreachable; retrying with back-off (check [registration] registrar and the network path)"
                );
            }
        })
        .await;
    // Shutting down: remove the binding so the PBX stops sending calls here.
    up(false);
    let unregister = registration.register(registrar, Some(0));
    match tokio::time::timeout(std::time::Duration::from_secs(2), unregister).await {
        Ok(Ok(_)) => info!(registrar = %config.registrar, "unregistered from the PBX"),
        _ => {
            warn!(registrar = %config.registrar, "could not unregister; the binding expires on its own")
        }
    }
}

/// What an admin should check for a refused REGISTER.
fn rejection_advice(status: &StatusCode) -> &'static str {
    match status.code() {
        401 | 407 => "the PBX rejected the credentials: check [registration] username, password and auth_username",
        403 => "the PBX forbids this account: check that it exists and may register from this address",
        404 => "the PBX does not know this account: check [registration] username and the registrar's domain",
        423 => "the PBX wants a longer expiry: raise [registration] expires_s",
        _ => "see the status; the PBX's own log usually says more",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_the_config_keys_to_check() {
        assert!(rejection_advice(&StatusCode::from(401)).contains("password"));
        assert!(rejection_advice(&StatusCode::from(423)).contains("expires_s"));
        assert!(rejection_advice(&StatusCode::from(403)).contains("forbids"));
    }
}
