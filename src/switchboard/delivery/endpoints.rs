//! Several records services (`[records] endpoints`, one PostgreSQL database
//! behind them): which one the spool's delivery and the recording uploads use,
//! and when they move to the next. The choice is sans-IO.

use crate::contract::connect::ClientOptions;

/// The records services a switchboard delivers to, in the order tried
/// (`[records] endpoints`; one for `endpoint` or the embedded service). With
/// several, they must share one database (PostgreSQL): ingest there is
/// idempotent by node and sequence, so a batch retried at the next one after a
/// lost acknowledgement is stored once.
#[derive(Debug, Clone)]
pub struct RecordsEndpoints {
    /// How to reach each one (same credentials, another endpoint).
    each: Vec<ClientOptions>,
}

impl RecordsEndpoints {
    /// How to reach each one, in order.
    pub fn each(&self) -> &[ClientOptions] {
        &self.each
    }

    /// How to reach endpoint `index`.
    pub fn get(&self, index: usize) -> Option<&ClientOptions> {
        self.each.get(index)
    }

    /// `options` for each of `endpoints` (`options.endpoint` itself when the list is empty).
    pub fn new(options: ClientOptions, endpoints: &[String]) -> RecordsEndpoints {
        if endpoints.is_empty() {
            return RecordsEndpoints::from(options);
        }
        RecordsEndpoints {
            each: endpoints
                .iter()
                .map(|endpoint| ClientOptions {
                    endpoint: endpoint.clone(),
                    ..options.clone()
                })
                .collect(),
        }
    }
}

impl From<ClientOptions> for RecordsEndpoints {
    fn from(options: ClientOptions) -> RecordsEndpoints {
        RecordsEndpoints {
            each: vec![options],
        }
    }
}

/// Which records endpoint delivery uses (sans-IO): the one that last worked,
/// for as long as it works; after a failure the next in the list at once, and
/// a back-off only once every endpoint has failed in a row, so one dead service
/// costs a connection attempt, not a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointChoice {
    /// How many endpoints there are (at least one).
    count: usize,
    /// The one to use now.
    current: usize,
    /// Failures since the last success.
    failures_in_a_row: usize,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the next endpoint now.
    TryNext,
    /// Every endpoint failed in turn: wait (back off), then start the round again.
    BackOff,
}

impl EndpointChoice {
    /// Starts with the first of `count` endpoints.
    pub fn new(count: usize) -> EndpointChoice {
        EndpointChoice {
            count: count.max(1),
            current: 0,
            failures_in_a_row: 0,
        }
    }

    /// The index of the endpoint to use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The current endpoint took the batch: stay with it.
    pub fn succeeded(&mut self) {
        self.failures_in_a_row = 0;
    }

    /// The current endpoint failed: moves on to the next.
    pub fn failed(&mut self) -> AfterFailure {
        self.failures_in_a_row += 1;
        self.current = (self.current + 1) % self.count;
        if self.failures_in_a_row % self.count == 0 {
            AfterFailure::BackOff
        } else {
            AfterFailure::TryNext
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_stays_with_a_working_endpoint_and_fails_over_to_the_next() {
        let mut choice = EndpointChoice::new(3);
        assert_eq!(choice.current(), 0);
        choice.succeeded();
        assert_eq!(choice.current(), 0, "a working endpoint is kept");
        // The first dies: the second at once.
        assert_eq!(choice.failed(), AfterFailure::TryNext);
        assert_eq!(choice.current(), 1);
        choice.succeeded();
        assert_eq!(choice.current(), 1, "no going back while it works");
        // All three fail in a row: back off once per round, then go round again.
        assert_eq!(choice.failed(), AfterFailure::TryNext);
        assert_eq!(choice.failed(), AfterFailure::TryNext);
        assert_eq!(choice.failed(), AfterFailure::BackOff);
        assert_eq!(choice.current(), 1, "the round starts where it left off");
        assert_eq!(choice.failed(), AfterFailure::TryNext);
        assert_eq!(choice.failed(), AfterFailure::TryNext);
        assert_eq!(choice.failed(), AfterFailure::BackOff);
        // One endpoint: every failure backs off, as before there were several.
        let mut one = EndpointChoice::new(1);
        assert_eq!(one.failed(), AfterFailure::BackOff);
        assert_eq!(one.current(), 0);
    }

    #[test]
    fn each_endpoint_gets_the_same_credentials() {
        let options = ClientOptions {
            token: Some("t".into()),
            ..ClientOptions::new("http://10.0.0.5:50051")
        };
        let endpoints = RecordsEndpoints::new(
            options.clone(),
            &[
                "http://10.0.0.5:50051".into(),
                "http://10.0.0.6:50051".into(),
            ],
        );
        let each: Vec<(&str, Option<&str>)> = endpoints
            .each
            .iter()
            .map(|o| (o.endpoint.as_str(), o.token.as_deref()))
            .collect();
        assert_eq!(
            each,
            [
                ("http://10.0.0.5:50051", Some("t")),
                ("http://10.0.0.6:50051", Some("t"))
            ]
        );
        assert_eq!(RecordsEndpoints::new(options, &[]).each.len(), 1);
    }
}
