//! `[records.patterns]`: the pattern alert rules the records service evaluates as
//! calls are recorded, and the webhook it posts matches to.

use std::path::PathBuf;

use serde::Deserialize;

use crate::contract::pb::Role;
use crate::records::alerts::{PatternRule, PatternSettings, Webhook};
use crate::records::patterns::{defaults, parse_kind, MAX_WINDOW_DAYS};

/// Attempts per match when `webhook_attempts` is not set.
const DEFAULT_ATTEMPTS: u32 = 5;
/// Most attempts: doubling waits from 1 s make 10 attempts about 17 minutes.
const MAX_ATTEMPTS: u32 = 10;

/// `[records.patterns]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatternsConfig {
    /// The alert rules; none (the default): no alerts.
    pub rules: Vec<PatternRuleConfig>,
    /// `http://host:port/path` of the court's case-management system; empty: no webhook.
    pub webhook_url: String,
    /// File holding the HMAC-SHA256 secret that signs each posted body (trailing
    /// whitespace ignored); needed with `webhook_url`.
    pub webhook_secret_file: String,
    /// Attempts per match, 1 s, 2 s, 4 s ... apart.
    pub webhook_attempts: u32,
}

impl Default for PatternsConfig {
    fn default() -> Self {
        PatternsConfig {
            rules: Vec::new(),
            webhook_url: String::new(),
            webhook_secret_file: String::new(),
            webhook_attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// `[[records.patterns.rules]]`: one rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRuleConfig {
    /// Unique name, chained with each match and sent to the webhook.
    pub name: String,
    /// courts, lines, repeated_calls, reported_again, warning_hang_ups, after_hours.
    pub pattern: String,
    /// At least this many; absent: the pattern's default.
    #[serde(default)]
    pub threshold: u32,
    /// Within this many UTC days; absent: the pattern's default.
    #[serde(default)]
    pub window_days: u32,
}

/// What is wrong with `[records.patterns]`, for `ConfigError::Invalid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternsProblem {
    /// Dotted key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: &'static str,
}

impl PatternsConfig {
    /// Checks the rules and the webhook's URL (not the secret file: it is read at start).
    pub fn check(&self) -> Result<(), PatternsProblem> {
        self.rules()?;
        self.webhook_url()?;
        Ok(())
    }

    /// The rules, defaults applied.
    fn rules(&self) -> Result<Vec<PatternRule>, PatternsProblem> {
        let mut names = std::collections::BTreeSet::new();
        self.rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let key = |field: &str| format!("records.patterns.rules[{index}].{field}");
                let name = rule.name.trim();
                if name.is_empty() || !names.insert(name.to_owned()) {
                    return Err(PatternsProblem {
                        key: key("name"),
                        problem: format!("\"{name}\" is empty or used twice"),
                        fix: "Give each rule a name of its own, e.g. name = \"broker\".",
                    });
                }
                let kind = parse_kind(&rule.pattern).ok_or_else(|| PatternsProblem {
                    key: key("pattern"),
                    problem: format!("\"{}\" is not a pattern", rule.pattern),
                    fix: "Use courts, lines, repeated_calls, reported_again, warning_hang_ups or after_hours.",
                })?;
                let (threshold, window_days) = defaults(kind);
                let window_days = if rule.window_days == 0 {
                    window_days
                } else {
                    rule.window_days
                };
                if window_days > MAX_WINDOW_DAYS {
                    return Err(PatternsProblem {
                        key: key("window_days"),
                        problem: format!("{window_days} days is longer than {MAX_WINDOW_DAYS}"),
                        fix: "Patterns are about days and weeks: use e.g. window_days = 7.",
                    });
                }
                Ok(PatternRule {
                    name: name.to_owned(),
                    kind,
                    threshold: if rule.threshold == 0 {
                        threshold
                    } else {
                        rule.threshold
                    },
                    window_days,
                })
            })
            .collect()
    }

    /// The webhook's URL, if one is set.
    fn webhook_url(&self) -> Result<Option<hyper::Uri>, PatternsProblem> {
        let url = self.webhook_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let problem = |problem: String| PatternsProblem {
            key: "records.patterns.webhook_url".into(),
            problem,
            fix: "Write it like \"http://cms.court.example:8080/courtline/alerts\" (plain HTTP on \
                  the court's network, or to a local TLS proxy).",
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|error| problem(format!("\"{url}\" is not a URL: {error}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(problem(format!(
                "\"{url}\" is not an http:// URL with a host"
            )));
        }
        if self.webhook_secret_file.trim().is_empty() {
            return Err(PatternsProblem {
                key: "records.patterns.webhook_secret_file".into(),
                problem: "is empty while webhook_url is set".into(),
                fix: "Name a file holding the shared secret (e.g. 32 random bytes in hex) that \
                      the receiver checks each body's signature with.",
            });
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.webhook_attempts) {
            return Err(PatternsProblem {
                key: "records.patterns.webhook_attempts".into(),
                problem: format!("{} is not 1 to {MAX_ATTEMPTS}", self.webhook_attempts),
                fix: "Use e.g. webhook_attempts = 5.",
            });
        }
        Ok(Some(uri))
    }

    /// The service's pattern settings, the webhook's secret read from its file;
    /// `masked_roles` are `[records.web] mask_callers_for`'s.
    pub fn settings(&self, masked_roles: Vec<Role>) -> Result<PatternSettings, PatternsProblem> {
        let webhook = match self.webhook_url()? {
            None => None,
            Some(url) => {
                let path = PathBuf::from(self.webhook_secret_file.trim());
                let secret = std::fs::read(&path).map_err(|error| PatternsProblem {
                    key: "records.patterns.webhook_secret_file".into(),
                    problem: format!("cannot read {}: {error}", path.display()),
                    fix: "Create the file (readable by courtline only) or correct the path.",
                })?;
                let secret = secret.trim_ascii_end().to_vec();
                if secret.is_empty() {
                    return Err(PatternsProblem {
                        key: "records.patterns.webhook_secret_file".into(),
                        problem: format!("{} is empty", path.display()),
                        fix: "Put the shared secret in it, e.g. `openssl rand -hex 32 > FILE`.",
                    });
                }
                Some(Webhook {
                    url,
                    secret,
                    attempts: self.webhook_attempts,
                })
            }
        };
        Ok(PatternSettings {
            rules: self.rules()?,
            webhook,
            masked_roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::PatternKind;

    fn parsed(text: &str) -> PatternsConfig {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    #[test]
    fn rules_take_the_patterns_defaults() {
        let patterns = parsed(
            "[[rules]]\nname = \"broker\"\npattern = \"courts\"\nthreshold = 6\nwindow_days = 3\n\
             [[rules]]\nname = \"hang-ups\"\npattern = \"warning-hang-ups\"\n",
        );
        let settings = patterns.settings(vec![Role::Auditor]).unwrap();
        assert_eq!(settings.rules.len(), 2);
        assert_eq!(
            (settings.rules[0].threshold, settings.rules[0].window_days),
            (6, 3)
        );
        assert_eq!(settings.rules[1].kind, PatternKind::WarningHangUps);
        assert_eq!(
            (settings.rules[1].threshold, settings.rules[1].window_days),
            defaults(PatternKind::WarningHangUps)
        );
        assert!(settings.webhook.is_none());
    }

    #[test]
    fn bad_rules_and_webhooks_are_named() {
        let problem = |text: &str| parsed(text).check().unwrap_err().key;
        assert_eq!(
            problem("[[rules]]\nname = \"a\"\npattern = \"brokers\"\n"),
            "records.patterns.rules[0].pattern"
        );
        assert_eq!(
            problem("[[rules]]\nname = \"a\"\npattern = \"courts\"\n[[rules]]\nname = \"a\"\npattern = \"lines\"\n"),
            "records.patterns.rules[1].name"
        );
        assert_eq!(
            problem("webhook_url = \"https://cms.example/x\"\nwebhook_secret_file = \"s\"\n"),
            "records.patterns.webhook_url"
        );
        assert_eq!(
            problem("webhook_url = \"http://cms.example/x\"\n"),
            "records.patterns.webhook_secret_file"
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let ok = parsed(&format!(
            "webhook_url = \"http://127.0.0.1:9/x\"\nwebhook_secret_file = \"{}\"\n",
            secret.display()
        ));
        let webhook = ok.settings(Vec::new()).unwrap().webhook.unwrap();
        assert_eq!(webhook.secret, b"s3cret");
        assert_eq!(webhook.attempts, DEFAULT_ATTEMPTS);
    }
}
