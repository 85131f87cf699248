//! `[probe]`: synthetic probe calls. `courtline probe` calls a line through the
//! switchboard's SIP port and checks the warning it hears; `courtline serve`
//! can do so on a schedule. A probe signs a header with a key the switchboard
//! keeps, so only real probes are recorded as probes and left out of statistics.

use std::path::PathBuf;

use serde::Deserialize;

use super::{uri, Config};

/// Shortest `[probe] key` accepted: anything shorter could be guessed.
const MIN_KEY_CHARS: usize = 16;

/// `[probe]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Minutes between scheduled probes of each line in `courtline serve`; 0 = none.
    pub every_minutes: u32,
    /// Line numbers probed on schedule; empty = every line.
    pub lines: Vec<String>,
    /// SIP URI a probe call is put through to after the warning (a test
    /// extension), instead of the line's operators; empty = nobody is dialled.
    pub target: String,
    /// The secret probes sign their header with; empty = a random key the
    /// switchboard creates in `probe.key` beside its spool directory.
    pub key: String,
}

/// What is wrong with `[probe]`: the key, the problem and the fix, for `ConfigError::Invalid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeProblem {
    /// Dotted key, e.g. `probe.lines`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: &'static str,
}

impl ProbeConfig {
    /// Checks the settings against the configured `lines`.
    pub fn check(&self, lines: &[String]) -> Result<(), ProbeProblem> {
        if let Some(unknown) = self.lines.iter().find(|number| !lines.contains(number)) {
            return Err(ProbeProblem {
                key: "probe.lines",
                problem: format!("{unknown:?} is not a configured line number"),
                fix: "List numbers of [[lines]], or leave it out to probe every line.",
            });
        }
        if !self.target.is_empty() {
            if let Err(problem) = uri::parse(&self.target) {
                return Err(ProbeProblem {
                    key: "probe.target",
                    problem: format!("{:?} {problem}", self.target),
                    fix: "Give a test extension's SIP URI, e.g. \"sip:probe@192.0.2.30:5060\", or \"\" to dial nobody.",
                });
            }
        }
        if !self.key.is_empty() && self.key.chars().count() < MIN_KEY_CHARS {
            return Err(ProbeProblem {
                key: "probe.key",
                problem: format!("is {} characters long", self.key.chars().count()),
                fix: "Use at least 16 random characters (e.g. `openssl rand -hex 32`), or \"\" for a key file made by courtline serve.",
            });
        }
        Ok(())
    }

    /// The lines probed on schedule: `lines`, or every line of `config`.
    pub fn scheduled_lines(&self, config: &Config) -> Vec<String> {
        if self.lines.is_empty() {
            config
                .lines
                .iter()
                .map(|line| line.number.clone())
                .collect()
        } else {
            self.lines.clone()
        }
    }
}

impl Config {
    /// Where the switchboard keeps its probe key when `[probe] key` is empty:
    /// `probe.key` beside the spool directory (in the service's state directory
    /// by default), where `courtline probe` on the same machine reads it.
    pub fn probe_key_path(&self) -> PathBuf {
        let spool = self.records.spool_path();
        match spool.parent() {
            Some(parent) => parent.join("probe.key"),
            None => PathBuf::from("probe.key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<String> {
        vec!["02112368".into()]
    }

    #[test]
    fn unknown_lines_bad_targets_and_short_keys_are_refused() {
        assert_eq!(ProbeConfig::default().check(&lines()), Ok(()));
        let unknown = ProbeConfig {
            lines: vec!["12345".into()],
            ..ProbeConfig::default()
        };
        assert_eq!(unknown.check(&lines()).unwrap_err().key, "probe.lines");
        let target = ProbeConfig {
            target: "probe@192.0.2.30".into(),
            ..ProbeConfig::default()
        };
        assert_eq!(target.check(&lines()).unwrap_err().key, "probe.target");
        let key = ProbeConfig {
            key: "secret".into(),
            ..ProbeConfig::default()
        };
        assert_eq!(key.check(&lines()).unwrap_err().key, "probe.key");
        let good = ProbeConfig {
            every_minutes: 5,
            lines: lines(),
            target: "sip:probe@192.0.2.30:5060".into(),
            key: "0123456789abcdef0123".into(),
        };
        assert_eq!(good.check(&lines()), Ok(()));
    }
}
