//! `[reports]`: how the operator asks, from the phone, for a "three rules"
//! report on the call it is bridged to. The switchboard's call flow matches
//! the key sequence; the records service opens the report.

use std::time::Duration;

use serde::Deserialize;

/// Longest key sequence accepted: longer ones only hold the operator's keys back longer.
const MAX_KEYS: usize = 8;
/// Range of `key_timeout_ms`: shorter cuts a slow operator off, longer delays ordinary keys.
const KEY_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=10_000;

/// `[reports]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Keys the bridged operator presses to ask for a report (`0`-`9`, `*`,
    /// `#`, `A`-`D`); empty turns the feature off and the operator's keys are
    /// relayed packet by packet as before.
    pub operator_keys: String,
    /// How long a key that could start the sequence is held back waiting for
    /// the next one before it is passed on to the caller.
    pub key_timeout_ms: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            operator_keys: "*7".into(),
            key_timeout_ms: 1500,
        }
    }
}

/// What is wrong with `[reports]`: the key, the problem and the fix, for `ConfigError::Invalid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportsProblem {
    /// Dotted key, e.g. `reports.operator_keys`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: &'static str,
}

impl ReportsConfig {
    /// The sequence in upper case (as keys arrive from RFC 4733 and SIP INFO).
    pub fn sequence(&self) -> String {
        self.operator_keys.to_ascii_uppercase()
    }

    /// `key_timeout_ms` as a duration.
    pub fn key_timeout(&self) -> Duration {
        Duration::from_millis(self.key_timeout_ms)
    }

    /// Checks the keys are DTMF keys and the timeout is usable.
    pub fn check(&self) -> Result<(), ReportsProblem> {
        let keys = &self.operator_keys;
        if let Some(bad) = keys
            .chars()
            .find(|c| !matches!(c.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D'))
        {
            return Err(ReportsProblem {
                key: "reports.operator_keys",
                problem: format!("\"{keys}\" contains '{bad}', which is not a phone key"),
                fix: "Use only 0-9, *, #, A-D, e.g. \"*7\"; or \"\" to turn reporting by keys off.",
            });
        }
        if keys.chars().count() > MAX_KEYS {
            return Err(ReportsProblem {
                key: "reports.operator_keys",
                problem: format!("\"{keys}\" is longer than {MAX_KEYS} keys"),
                fix: "Use a short sequence such as \"*7\": every key of it is held back from the caller until it cannot match.",
            });
        }
        if !KEY_TIMEOUT_MS.contains(&self.key_timeout_ms) {
            return Err(ReportsProblem {
                key: "reports.key_timeout_ms",
                problem: format!("{} ms is outside 100-10000", self.key_timeout_ms),
                fix: "Use about 1500: long enough to press the next key, short enough that a held-back key still reaches the caller promptly.",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_star_seven_and_checks() {
        let config = ReportsConfig::default();
        assert_eq!(config.sequence(), "*7");
        assert_eq!(config.key_timeout(), Duration::from_millis(1500));
        assert_eq!(config.check(), Ok(()));
        let off = ReportsConfig {
            operator_keys: String::new(),
            ..config
        };
        assert_eq!(off.check(), Ok(()));
    }

    #[test]
    fn bad_keys_and_timeouts_name_the_key() {
        let check = |keys: &str, timeout: u64| {
            ReportsConfig {
                operator_keys: keys.into(),
                key_timeout_ms: timeout,
            }
            .check()
            .unwrap_err()
        };
        let e = check("*x", 1500);
        assert_eq!(e.key, "reports.operator_keys");
        assert!(e.problem.contains("'x'"), "{e:?}");
        assert_eq!(check("*七", 1500).key, "reports.operator_keys");
        assert_eq!(check("123456789", 1500).key, "reports.operator_keys");
        assert_eq!(check("*7", 50).key, "reports.key_timeout_ms");
        assert_eq!(check("*7", 60_000).key, "reports.key_timeout_ms");
        assert_eq!(
            ReportsConfig {
                operator_keys: "#9d".into(),
                key_timeout_ms: 300
            }
            .sequence(),
            "#9D"
        );
    }
}
