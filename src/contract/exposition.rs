//! The Prometheus text both processes serve on one admin endpoint (the
//! switchboard's metrics and, embedded or alone, the records service's): one
//! encoding, and one way to show a count kept elsewhere as a counter.

use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

/// Every metric of `registry` in the Prometheus text exposition format.
pub fn text_of(registry: &Registry) -> String {
    let mut text = Vec::new();
    // Encoding into memory cannot fail for the metric types courtline registers.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut text) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(text).unwrap_or_default()
}

/// Raises `counter` to `total`, a count kept elsewhere that only grows.
pub fn catch_up(counter: &IntCounter, total: u64) {
    let counted = counter.get();
    if total > counted {
        counter.inc_by(total - counted);
    }
}

/// The value of `series` (a name with its labels, as printed) in `text`: for the
/// metrics modules' tests.
#[cfg(test)]
pub(crate) fn value_of<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_catches_up_with_its_count_and_never_goes_back() {
        let registry = Registry::new();
        let counter = IntCounter::new("courtline_test_total", "A count kept elsewhere.").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        catch_up(&counter, 5);
        catch_up(&counter, 3);
        assert_eq!(counter.get(), 5);
        let text = text_of(&registry);
        assert!(
            text.contains("# TYPE courtline_test_total counter"),
            "{text}"
        );
        assert!(
            text.lines().any(|line| line == "courtline_test_total 5"),
            "{text}"
        );
    }
}
