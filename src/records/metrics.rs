//! The records service's Prometheus metrics (`courtline_records_*`), served by the
//! admin endpoint's `/metrics` beside the switchboard's (`courtline serve`) or alone
//! (`courtline records serve`).
//!
//! Counters count what this service did (events it chained, events it staged);
//! gauges are read when scraped ([`Snapshot`], gathered by [`super::monitor`]) from
//! what the ledger and the database keep anyway: the chain's head, the derived
//! tables' watermark, the staging table. Those three are the database's, so every
//! service of a shared database shows the same values (aggregate them with `max`).
//! No labels: one service is one series of each.

use prometheus::{Gauge, IntCounter, IntGauge, Registry};

use super::store::ChainProgress;
use crate::contract::exposition::{catch_up, text_of};

/// What the service reads at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Switchboard events this service chained since it started.
    pub events_ingested: u64,
    /// The chain's head and the derived tables' watermark; `None` when the database
    /// could not be read (the gauges keep their last values).
    pub progress: Option<ChainProgress>,
    /// A shared database's part; `None` for a service alone on its database.
    pub shared: Option<SharedSnapshot>,
    /// The time of the scrape (Unix ms), which the derived tables' lag is measured to.
    pub now_ms: i64,
}

/// What a service of a shared database reads at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedSnapshot {
    /// Whether this service holds the sequencer's lock.
    pub sequencing: bool,
    /// Switchboard events this service staged since it started.
    pub events_staged: u64,
    /// Events staged and not yet chained (every service's, up to
    /// [`crate::records::ledger::staging::BACKLOG_COUNT_LIMIT`]); `None` when the
    /// database could not be read.
    pub backlog: Option<i64>,
}

/// Every `courtline_records_*` metric of one records service, in its own registry.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` renders.
    registry: Registry,
    /// Switchboard events this service chained.
    ingested: IntCounter,
    /// Chain position of the last event.
    chain_head: IntGauge,
    /// 1 while this service chains switchboard events.
    sequencer: IntGauge,
    /// Chained events the derived tables do not hold yet.
    derived_lag_events: IntGauge,
    /// How long the oldest of them has been chained.
    derived_lag_seconds: Gauge,
    /// 1 when the scrape's reads of the database succeeded.
    database_up: IntGauge,
    /// A shared database's metrics; `None` for a service alone on its database.
    shared: Option<SharedMetrics>,
}

/// The metrics only a service of a shared database has.
#[derive(Debug)]
struct SharedMetrics {
    /// Switchboard events this service staged.
    staged_total: IntCounter,
    /// Events staged and not yet chained.
    staged: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry; `shared`: the service shares its
    /// database with others (and has the staging metrics).
    pub fn new(shared: bool) -> Metrics {
        let registry = Registry::new();
        let register = |metric: Box<dyn prometheus::core::Collector>| {
            // Names are fixed and distinct: registering cannot fail.
            registry.register(metric).expect("distinct metric names");
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric");
            register(Box::new(counter.clone()));
            counter
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(gauge.clone()));
            gauge
        };
        let ingested = counter(
            "courtline_records_events_ingested_total",
            "Switchboard events this records service chained, from any switchboard (in a shared database only the sequencer chains).",
        );
        let chain_head = gauge(
            "courtline_records_chain_head",
            "Chain position of the last chained event.",
        );
        let sequencer = gauge(
            "courtline_records_sequencer",
            "1 while this records service chains switchboard events (holds the sequencer's lock, or is alone on its database), else 0.",
        );
        let derived_lag_events = gauge(
            "courtline_records_derived_lag_events",
            "Chained events whose effects the derived tables (calls, dashboard figures, caller days, name index) do not hold yet: the chain head minus derived_through.",
        );
        let derived_lag_seconds = Gauge::new(
            "courtline_records_derived_lag_seconds",
            "How long ago the oldest chained event the derived tables do not hold yet was chained (0 when they hold the head).",
        )
        .expect("valid metric");
        register(Box::new(derived_lag_seconds.clone()));
        let database_up = gauge(
            "courtline_records_database_up",
            "1 when this scrape read the records database, 0 when it could not (the figures read from it keep their last values).",
        );
        let shared = shared.then(|| SharedMetrics {
            staged_total: counter(
                "courtline_records_events_staged_total",
                "Switchboard events this records service staged for the sequencer (shared database; redeliveries not counted).",
            ),
            staged: gauge(
                "courtline_records_staged_events",
                "Switchboard events acknowledged (staged) and not yet chained, in the whole shared database (counted up to 100000).",
            ),
        });
        Metrics {
            registry,
            ingested,
            chain_head,
            sequencer,
            derived_lag_events,
            derived_lag_seconds,
            database_up,
            shared,
        }
    }

    /// The Prometheus text format of every metric, with `snapshot` read into them.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        catch_up(&self.ingested, snapshot.events_ingested);
        let mut database_up = snapshot.progress.is_some();
        if let Some(progress) = &snapshot.progress {
            self.chain_head.set(progress.head);
            self.derived_lag_events
                .set((progress.head - progress.derived_through).max(0));
            let waited_ms = progress
                .oldest_underived_at_ms
                .map_or(0, |chained_at| (snapshot.now_ms - chained_at).max(0));
            self.derived_lag_seconds.set(waited_ms as f64 / 1000.0);
        }
        match (&self.shared, &snapshot.shared) {
            (Some(metrics), Some(shared)) => {
                self.sequencer.set(i64::from(shared.sequencing));
                catch_up(&metrics.staged_total, shared.events_staged);
                match shared.backlog {
                    Some(backlog) => metrics.staged.set(backlog),
                    None => database_up = false,
                }
            }
            // Alone on its database, the service chains whatever it takes.
            _ => self.sequencer.set(1),
        }
        self.database_up.set(i64::from(database_up));
        text_of(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::exposition::value_of;

    #[test]
    fn a_lone_service_is_its_own_sequencer_and_its_derived_tables_never_lag() {
        let metrics = Metrics::new(false);
        let text = metrics.render(&Snapshot {
            events_ingested: 12,
            progress: Some(ChainProgress {
                head: 40,
                derived_through: 40,
                oldest_underived_at_ms: None,
            }),
            shared: None,
            now_ms: 1_800_000_000_000,
        });
        assert_eq!(value_of(&text, "courtline_records_sequencer"), Some("1"));
        assert_eq!(value_of(&text, "courtline_records_chain_head"), Some("40"));
        assert_eq!(
            value_of(&text, "courtline_records_events_ingested_total"),
            Some("12")
        );
        assert_eq!(
            value_of(&text, "courtline_records_derived_lag_events"),
            Some("0")
        );
        assert_eq!(
            value_of(&text, "courtline_records_derived_lag_seconds"),
            Some("0")
        );
        assert_eq!(value_of(&text, "courtline_records_database_up"), Some("1"));
        // Staging is a shared database's: a lone service has none to show.
        assert!(!text.contains("courtline_records_staged_events"), "{text}");
        assert!(!text.contains("courtline_records_events_staged_total"));
    }

    #[test]
    fn a_follower_behind_the_chain_shows_how_many_events_and_since_when() {
        let metrics = Metrics::new(true);
        let snapshot = Snapshot {
            events_ingested: 0,
            progress: Some(ChainProgress {
                head: 1_500,
                derived_through: 1_200,
                oldest_underived_at_ms: Some(1_800_000_000_000 - 2_500),
            }),
            shared: Some(SharedSnapshot {
                sequencing: false,
                events_staged: 300,
                backlog: Some(45),
            }),
            now_ms: 1_800_000_000_000,
        };
        let text = metrics.render(&snapshot);
        assert_eq!(value_of(&text, "courtline_records_sequencer"), Some("0"));
        assert_eq!(
            value_of(&text, "courtline_records_derived_lag_events"),
            Some("300")
        );
        assert_eq!(
            value_of(&text, "courtline_records_derived_lag_seconds"),
            Some("2.5")
        );
        assert_eq!(
            value_of(&text, "courtline_records_staged_events"),
            Some("45")
        );
        assert_eq!(
            value_of(&text, "courtline_records_events_staged_total"),
            Some("300")
        );
        // Another service's clock a little ahead: no negative age.
        let text = metrics.render(&Snapshot {
            now_ms: 1_800_000_000_000 - 4_000,
            ..snapshot
        });
        assert_eq!(
            value_of(&text, "courtline_records_derived_lag_seconds"),
            Some("0")
        );
    }

    #[test]
    fn an_unreadable_database_keeps_the_last_figures_and_says_so() {
        let metrics = Metrics::new(true);
        let shared = SharedSnapshot {
            sequencing: true,
            events_staged: 10,
            backlog: Some(3),
        };
        metrics.render(&Snapshot {
            events_ingested: 7,
            progress: Some(ChainProgress {
                head: 90,
                derived_through: 90,
                oldest_underived_at_ms: None,
            }),
            shared: Some(shared),
            now_ms: 0,
        });
        let text = metrics.render(&Snapshot {
            events_ingested: 9,
            progress: None,
            shared: Some(SharedSnapshot {
                backlog: None,
                ..shared
            }),
            now_ms: 0,
        });
        assert_eq!(value_of(&text, "courtline_records_database_up"), Some("0"));
        assert_eq!(value_of(&text, "courtline_records_chain_head"), Some("90"));
        assert_eq!(
            value_of(&text, "courtline_records_staged_events"),
            Some("3")
        );
        assert_eq!(
            value_of(&text, "courtline_records_events_ingested_total"),
            Some("9")
        );
        // The database is back, staging alone unreadable: still not up.
        let text = metrics.render(&Snapshot {
            events_ingested: 9,
            progress: Some(ChainProgress::default()),
            shared: Some(SharedSnapshot {
                backlog: None,
                ..shared
            }),
            now_ms: 0,
        });
        assert_eq!(value_of(&text, "courtline_records_database_up"), Some("0"));
    }
}
