//! Readiness (sans-IO): whether this switchboard should be sent calls, and if
//! not, why. The admin endpoint's `/readyz` gathers the facts and answers 503
//! with [`Readiness::failing`] as its text.

/// Events waiting for an unreachable records service beyond which the
/// switchboard is not ready: the spool keeps them, but an outage is becoming
/// long (hours of a court's calls; seconds at a trunk's hundreds a second).
pub const SPOOL_BOUND_EVENTS: u64 = 20_000;

/// What readiness is decided on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readiness {
    /// The SIP endpoint is bound and serving.
    pub sip_serving: bool,
    /// Every line has its playlist loaded.
    pub prompts_loaded: bool,
    /// The last spool write (or check) succeeded.
    pub spool_writable: bool,
    /// The last delivery attempt reached the records service.
    pub records_reachable: bool,
    /// Events spooled and not yet acknowledged.
    pub spool_depth: u64,
    /// SIGTERM was received: calls in progress finish, new ones go elsewhere.
    pub draining: bool,
}

impl Readiness {
    /// One plain-text reason per failing check; empty when ready.
    pub fn failing(&self) -> Vec<String> {
        let mut failing = Vec::new();
        if self.draining {
            failing.push("draining: shutting down, new calls are refused".to_string());
        }
        if !self.sip_serving {
            failing.push("sip: the SIP endpoint is not serving".to_string());
        }
        if !self.prompts_loaded {
            failing.push("prompts: a line's prompts are not loaded".to_string());
        }
        if !self.spool_writable {
            failing.push("spool: the records spool cannot be written".to_string());
        }
        if !self.records_reachable && self.spool_depth > SPOOL_BOUND_EVENTS {
            failing.push(format!(
                "records: the records service is unreachable and {} events wait in the spool (more than {SPOOL_BOUND_EVENTS})",
                self.spool_depth
            ));
        }
        failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Readiness {
        Readiness {
            sip_serving: true,
            prompts_loaded: true,
            spool_writable: true,
            records_reachable: true,
            spool_depth: 0,
            draining: false,
        }
    }

    #[test]
    fn all_checks_passing_is_ready() {
        assert!(ready().failing().is_empty());
    }

    #[test]
    fn an_unreachable_service_is_fine_while_the_spool_absorbs_it() {
        let within = Readiness {
            records_reachable: false,
            spool_depth: SPOOL_BOUND_EVENTS,
            ..ready()
        };
        assert!(within.failing().is_empty());
        let beyond = Readiness {
            spool_depth: SPOOL_BOUND_EVENTS + 1,
            ..within
        };
        assert_eq!(beyond.failing().len(), 1);
        assert!(beyond.failing()[0].starts_with("records: "));
        // A reachable service with a backlog is catching up: ready.
        let catching_up = Readiness {
            records_reachable: true,
            ..beyond
        };
        assert!(catching_up.failing().is_empty());
    }

    #[test]
    fn every_failing_check_is_named() {
        let broken = Readiness {
            sip_serving: false,
            prompts_loaded: false,
            spool_writable: false,
            records_reachable: false,
            spool_depth: SPOOL_BOUND_EVENTS + 1,
            draining: true,
        };
        let failing = broken.failing();
        let prefixes: Vec<&str> = failing
            .iter()
            .map(|reason| reason.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(prefixes, ["draining", "sip", "prompts", "spool", "records"]);
    }

    #[test]
    fn an_unwritable_spool_alone_is_not_ready() {
        let failing = Readiness {
            spool_writable: false,
            ..ready()
        }
        .failing();
        assert_eq!(failing, ["spool: the records spool cannot be written"]);
    }
}
