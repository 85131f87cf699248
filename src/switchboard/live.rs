//! The configuration in force, and what a reload may change (sans-IO).
//!
//! A call takes the [`LiveConfig`] in force when it is admitted and keeps it to
//! its end; a reload builds a whole new one (every prompt decoded and
//! pre-encoded) before [`decide`] compares it with the one in force, and only
//! then is it swapped in. Prompt versions scheduled with `valid_from` are
//! resolved here too: [`PlaylistSchedule::at`] gives the playlists valid at a
//! call's start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::media::prompt::{LinePlaylists, Prompt};
use crate::config::hours::DayKind;
use crate::config::Config;
use crate::contract::pb::{ConfigApplied, ConfiguredPrompt};

/// Keys that are bound to sockets, files or tasks made at start-up: a reload that
/// changes one is refused (restart needed). Everything else changes live.
pub const RESTART_ONLY: &[&str] = &[
    "sip",
    "media.rtp_ports",
    "media.advertise_address",
    "media.ringback",
    "media.send",
    "media.threads",
    "media.realtime",
    "records",
    "recording.dir",
    "admin",
    "registration",
];

/// One recording of a prompt id and when it starts playing.
#[derive(Debug, Clone)]
pub struct PromptVersion {
    /// `None` for `[prompts.<id>] file` (it plays until the first version);
    /// a `[[prompts.<id>.versions]]` entry's `valid_from` otherwise.
    pub valid_from: Option<DateTime<Utc>>,
    /// The recording, loaded and pre-encoded.
    pub prompt: Prompt,
}

/// Every prompt id's recordings, in the order they go live.
pub type PromptVersions = BTreeMap<String, Vec<PromptVersion>>;

/// Which of `starts` (in order; `None` = since always) is in force at `now`: the
/// last one that has started. 0 when none has (the first is then the one to use).
pub fn in_force_at(starts: &[Option<DateTime<Utc>>], now: DateTime<Utc>) -> usize {
    starts
        .iter()
        .rposition(|start| start.is_none_or(|start| start <= now))
        .unwrap_or(0)
}

/// Each line's playlists, one set per stretch of time in which no prompt version
/// changes: built (and encoded) when the configuration is loaded, chosen per call.
#[derive(Debug, Clone)]
pub struct PlaylistSchedule {
    /// When each stretch starts (`None` for the first), in order, with its playlists.
    stretches: Vec<(Option<DateTime<Utc>>, LinePlaylists)>,
}

impl PlaylistSchedule {
    /// Playlists that never change (no prompt has versions).
    #[cfg(test)]
    pub fn fixed(playlists: LinePlaylists) -> PlaylistSchedule {
        PlaylistSchedule {
            stretches: vec![(None, playlists)],
        }
    }

    /// Builds the playlists of every stretch still to come at `now` (the one in force
    /// included): `build` gets the recording each prompt id plays during the stretch.
    pub fn build(
        prompts: &PromptVersions,
        now: DateTime<Utc>,
        build: impl Fn(&HashMap<String, Prompt>) -> LinePlaylists,
    ) -> PlaylistSchedule {
        let changes: BTreeSet<DateTime<Utc>> = prompts
            .values()
            .flatten()
            .filter_map(|version| version.valid_from)
            .collect();
        let starts: Vec<Option<DateTime<Utc>>> = std::iter::once(None)
            .chain(changes.into_iter().map(Some))
            .collect();
        let first = in_force_at(&starts, now);
        let stretches = starts[first..]
            .iter()
            .map(|start| {
                let at = start.unwrap_or(now);
                let chosen = prompts
                    .iter()
                    .filter_map(|(id, versions)| {
                        let froms: Vec<_> = versions.iter().map(|v| v.valid_from).collect();
                        let version = versions.get(in_force_at(&froms, at))?;
                        Some((id.clone(), version.prompt.clone()))
                    })
                    .collect();
                (*start, build(&chosen))
            })
            .collect();
        PlaylistSchedule { stretches }
    }

    /// The playlists for a call that starts at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> &LinePlaylists {
        let starts: Vec<_> = self.stretches.iter().map(|(start, _)| *start).collect();
        &self.stretches[in_force_at(&starts, now)].1
    }
}

/// The configuration in force: what every call admitted now is set up with.
#[derive(Debug)]
pub struct LiveConfig {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Each line's playlists, loaded and pre-encoded, per stretch of prompt versions.
    pub playlists: PlaylistSchedule,
    /// Every prompt version's id, label, file hash and start, for the records event.
    pub prompts: Vec<ConfiguredPrompt>,
    /// SHA-256 (hex) of the effective configuration (see `ConfigApplied.config_sha256`).
    pub sha256: String,
}

impl LiveConfig {
    /// Puts a loaded configuration, its prompts and their playlists together.
    pub fn new(
        config: Config,
        prompts: &PromptVersions,
        playlists: PlaylistSchedule,
    ) -> LiveConfig {
        let configured: Vec<ConfiguredPrompt> = prompts
            .iter()
            .flat_map(|(id, versions)| {
                versions.iter().map(move |version| ConfiguredPrompt {
                    id: id.clone(),
                    version: version.prompt.version.clone(),
                    sha256: version.prompt.sha256.clone(),
                    valid_from_ms: version.valid_from.map_or(0, |at| at.timestamp_millis()),
                })
            })
            .collect();
        let sha256 = config_sha256(&config.effective, &configured, &calendar_days(&config));
        LiveConfig {
            config: Arc::new(config),
            playlists,
            prompts: configured,
            sha256,
        }
    }
}

/// Each `[hours.<name>]`'s calendar as read from its files: date → "off <name>" or
/// "work <name> as <weekday>", so the hash covers the files' contents, not their paths.
fn calendar_days(config: &Config) -> BTreeMap<String, BTreeMap<String, String>> {
    config
        .office_hours
        .iter()
        .map(|(name, hours)| {
            let calendar = hours.calendar();
            let days = calendar
                .span()
                .map(|(first, last)| {
                    first
                        .iter_days()
                        .take_while(|day| *day <= last)
                        .filter_map(|day| {
                            let kind = match calendar.day(day)? {
                                DayKind::Off(name) => format!("off {name}"),
                                DayKind::Work { name, as_weekday } => {
                                    format!("work {name} as {as_weekday}")
                                }
                            };
                            Some((day.to_string(), kind))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name.clone(), days)
        })
        .collect()
}

/// SHA-256 (hex) of the canonical JSON of `{"config": effective, "prompt_files":
/// {id: [sha256, ...]}, "calendars": {hours: {date: kind}}}`: the settings as merged,
/// the exact recordings and the holiday calendars as read.
pub fn config_sha256(
    effective: &Value,
    prompts: &[ConfiguredPrompt],
    calendars: &BTreeMap<String, BTreeMap<String, String>>,
) -> String {
    let mut files: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for prompt in prompts {
        files
            .entry(&prompt.id)
            .or_default()
            .push(Value::String(prompt.sha256.clone()));
    }
    let whole =
        serde_json::json!({ "config": effective, "prompt_files": files, "calendars": calendars });
    let mut text = String::new();
    canonical_json(&whole, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `value` as JSON with object keys sorted and no whitespace, whatever order
/// `serde_json`'s maps keep.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Who asked for a configuration to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// `courtline serve` starting: the baseline.
    Startup,
    /// `SIGHUP` to the process.
    Signal,
    /// `courtline reload`, through the admin endpoint.
    Cli {
        /// Where it connected from.
        peer: SocketAddr,
        /// The OS user it says it runs as.
        user: String,
    },
    /// Another client's `POST /reload` on the admin endpoint.
    AdminHttp {
        /// Where it connected from.
        peer: SocketAddr,
    },
}

impl Requester {
    /// The name recorded (`ConfigApplied.requested_by`) and logged.
    pub fn name(&self) -> &'static str {
        match self {
            Requester::Startup => "startup",
            Requester::Signal => "sighup",
            Requester::Cli { .. } => "cli",
            Requester::AdminHttp { .. } => "admin_http",
        }
    }
}

/// A reload refused because it changes settings only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file}: restart needed: {} cannot change while courtline runs; the configuration in force is unchanged. \
     Undo the change and reload, or restart courtline to apply it",
    keys.join(", ")
)]
pub struct RestartNeeded {
    /// The main configuration file.
    pub file: String,
    /// The keys that changed, dotted (`sip.listen`, `lines[2].record_audio`).
    pub keys: Vec<String>,
}

/// What a reload changes, by line number and prompt id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Lines only the new configuration has.
    pub lines_added: Vec<String>,
    /// Lines only the old one had.
    pub lines_removed: Vec<String>,
    /// Lines in both whose entry, hours or prompts differ.
    pub lines_changed: Vec<String>,
    /// Prompt ids only the new configuration has.
    pub prompts_added: Vec<String>,
    /// Prompt ids only the old one had.
    pub prompts_removed: Vec<String>,
    /// Prompt ids in both whose entry or recordings differ.
    pub prompts_changed: Vec<String>,
}

impl Changes {
    /// Nothing a caller could notice changed.
    pub fn is_empty(&self) -> bool {
        self.lines_added.is_empty()
            && self.lines_removed.is_empty()
            && self.lines_changed.is_empty()
            && self.prompts_added.is_empty()
            && self.prompts_removed.is_empty()
            && self.prompts_changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no line or prompt changed");
        }
        let parts = [
            ("lines added", &self.lines_added),
            ("lines removed", &self.lines_removed),
            ("lines changed", &self.lines_changed),
            ("prompts added", &self.prompts_added),
            ("prompts removed", &self.prompts_removed),
            ("prompts changed", &self.prompts_changed),
        ];
        let text: Vec<String> = parts
            .iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(what, items)| format!("{what}: {}", items.join(", ")))
            .collect();
        f.write_str(&text.join("; "))
    }
}

/// Whether `after` may replace `before` while calls run, and what it changes.
/// `recorder_running`: the recording writer was started (some line recorded at
/// start-up); without it, a line that records needs a restart.
pub fn decide(
    before: &LiveConfig,
    after: &LiveConfig,
    recorder_running: bool,
) -> Result<Changes, RestartNeeded> {
    let old = &before.config.effective;
    let new = &after.config.effective;
    let mut changed = Vec::new();
    changed_keys(old, new, String::new(), &mut changed);
    let mut keys: Vec<String> = changed
        .into_iter()
        .filter(|key| {
            RESTART_ONLY.iter().any(|prefix| {
                key == prefix
                    || key.starts_with(&format!("{prefix}."))
                    || key.starts_with(&format!("{prefix}["))
            })
        })
        .collect();
    if !recorder_running {
        keys.extend(
            after
                .config
                .lines
                .iter()
                .enumerate()
                .filter(|(_, line)| line.record_audio != crate::config::RecordAudio::Never)
                .map(|(i, _)| format!("lines[{i}].record_audio")),
        );
    }
    if !keys.is_empty() {
        return Err(RestartNeeded {
            file: after.config.source.clone(),
            keys,
        });
    }
    Ok(changes(before, after))
}

/// Dotted paths of every leaf that differs between `old` and `new` (an array counts
/// as a leaf; an absent section as an empty one, so the keys set in it are named).
fn changed_keys(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    let empty = serde_json::Map::new();
    match (section(old, &empty), section(new, &empty)) {
        (Some(a), Some(b)) if old.is_object() || new.is_object() => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                changed_keys(
                    a.get(name).unwrap_or(&Value::Null),
                    b.get(name).unwrap_or(&Value::Null),
                    child,
                    out,
                );
            }
        }
        _ if old != new => out.push(path),
        _ => {}
    }
}

/// `value` as a section of keys: its map, `empty` when absent, `None` for a plain value.
fn section<'a>(
    value: &'a Value,
    empty: &'a serde_json::Map<String, Value>,
) -> Option<&'a serde_json::Map<String, Value>> {
    match value {
        Value::Null => Some(empty),
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Lines and prompts `after` adds, removes or changes compared with `before`.
fn changes(before: &LiveConfig, after: &LiveConfig) -> Changes {
    let prompts_of = |live: &LiveConfig| {
        let mut by_id: BTreeMap<String, (Value, Vec<ConfiguredPrompt>)> = BTreeMap::new();
        for id in live.config.prompts.keys() {
            let entry = live.config.effective["prompts"][id].clone();
            by_id.insert(id.clone(), (entry, Vec::new()));
        }
        for prompt in &live.prompts {
            if let Some((_, files)) = by_id.get_mut(&prompt.id) {
                files.push(prompt.clone());
            }
        }
        by_id
    };
    let (old_prompts, new_prompts) = (prompts_of(before), prompts_of(after));
    let (prompts_added, prompts_removed, prompts_changed) = compare(&old_prompts, &new_prompts);

    let lines_of = |live: &LiveConfig| {
        let config = &live.config;
        config
            .lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let mut plays = line.prompt.items();
                if let Some(after_hours) = &line.after_hours {
                    plays.extend(after_hours.prompt.items());
                }
                plays.extend(line.failover_prompt.clone());
                // Zone, weekly hours and the calendar files' contents.
                let hours = config.office_hours.get(&line.hours).cloned();
                let entry = config.effective["lines"][i].clone();
                (line.number.clone(), (entry, hours, plays))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (old_lines, new_lines) = (lines_of(before), lines_of(after));
    let (lines_added, lines_removed, mut lines_changed) = compare(&old_lines, &new_lines);
    // A line also changes when a prompt it plays does.
    for (number, (_, _, plays)) in &new_lines {
        let plays_changed = plays.iter().any(|id| prompts_changed.contains(id));
        if plays_changed && old_lines.contains_key(number) && !lines_changed.contains(number) {
            lines_changed.push(number.clone());
        }
    }
    lines_changed.sort();
    Changes {
        lines_added,
        lines_removed,
        lines_changed,
        prompts_added,
        prompts_removed,
        prompts_changed,
    }
}

/// Keys only in `new`, only in `old`, and in both with different values.
fn compare<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|before| before != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// The records event of `after` going into force: what changed since `before`
/// (`None` at start-up), and who asked.
pub fn applied_event(
    requester: &Requester,
    before: Option<&LiveConfig>,
    after: &LiveConfig,
    changes: Changes,
) -> ConfigApplied {
    let (peer, user) = match requester {
        Requester::Cli { peer, user } => (peer.to_string(), user.clone()),
        Requester::AdminHttp { peer } => (peer.to_string(), String::new()),
        Requester::Startup | Requester::Signal => (String::new(), String::new()),
    };
    ConfigApplied {
        requested_by: requester.name().to_owned(),
        peer,
        user,
        config_sha256: after.sha256.clone(),
        previous_sha256: before.map(|live| live.sha256.clone()).unwrap_or_default(),
        config_file: after.config.source.clone(),
        lines_added: changes.lines_added,
        lines_removed: changes.lines_removed,
        lines_changed: changes.lines_changed,
        prompts_added: changes.prompts_added,
        prompts_removed: changes.prompts_removed,
        prompts_changed: changes.prompts_changed,
        prompts: after.prompts.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::switchboard::media::prompt::{Playlist, PromptFrames, PromptLevels};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn prompt(id: &str, sha: &str) -> Prompt {
        Prompt {
            id: id.into(),
            version: sha.into(),
            path: Path::new("x.wav").into(),
            sha256: sha.into(),
            frames: Arc::new(PromptFrames::from_pcm(&[0; 160], None)),
            levels: PromptLevels::measure(&[0.0; 160], 8000),
        }
    }

    const BASE: &str = r#"
[prompts.warn]
file = "audio/three_rules_zh.wav"
[prompts.busy]
file = "audio/three_rules_zh.wav"
[[lines]]
number = "100"
court = "A"
prompt = "warn"
operator = "sip:op@127.0.0.1:5070"
record_audio = "never"
[[lines]]
number = "200"
court = "B"
prompt = "busy"
operator = "sip:op@127.0.0.1:5070"
record_audio = "never"
"#;

    fn live(text: &str, shas: &[(&str, &str)]) -> LiveConfig {
        let config = Config::from_toml_str(text, "test.toml").unwrap();
        let prompts: PromptVersions = shas
            .iter()
            .map(|(id, sha)| {
                (
                    id.to_string(),
                    vec![PromptVersion {
                        valid_from: None,
                        prompt: prompt(id, sha),
                    }],
                )
            })
            .collect();
        LiveConfig::new(
            config,
            &prompts,
            PlaylistSchedule::fixed(LinePlaylists::default()),
        )
    }

    #[test]
    fn the_version_in_force_is_the_last_started_one() {
        let starts = [
            None,
            Some(at("2027-01-01T00:00:00+08:00")),
            Some(at("2027-06-01T00:00:00+08:00")),
        ];
        assert_eq!(in_force_at(&starts, at("2026-12-31T23:59:59+08:00")), 0);
        // Midnight in Shanghai is 16:00 UTC the day before.
        assert_eq!(in_force_at(&starts, at("2026-12-31T16:00:00Z")), 1);
        assert_eq!(in_force_at(&starts, at("2027-05-31T15:59:59.999Z")), 1);
        assert_eq!(in_force_at(&starts, at("2027-06-01T00:00:00+08:00")), 2);
        // Only future versions: the first is the one to use.
        assert_eq!(
            in_force_at(
                &[Some(at("2030-01-01T00:00:00Z"))],
                at("2026-01-01T00:00:00Z")
            ),
            0
        );
    }

    #[test]
    fn the_schedule_builds_one_stretch_per_change_and_picks_by_call_start() {
        let midnight = at("2027-01-01T00:00:00+08:00");
        let prompts: PromptVersions = [(
            "warn".to_string(),
            vec![
                PromptVersion {
                    valid_from: None,
                    prompt: prompt("warn", "old"),
                },
                PromptVersion {
                    valid_from: Some(midnight),
                    prompt: prompt("warn", "new"),
                },
            ],
        )]
        .into();
        let build = |chosen: &HashMap<String, Prompt>| LinePlaylists {
            in_hours: [(
                "100".to_string(),
                Arc::new(Playlist::new(vec![chosen["warn"].clone()], 0, 0)),
            )]
            .into(),
            ..LinePlaylists::default()
        };
        let playing = |schedule: &PlaylistSchedule, now| {
            schedule.at(now).in_hours["100"].prompts()[0].sha256.clone()
        };
        let before = at("2026-12-31T12:00:00Z");
        let schedule = PlaylistSchedule::build(&prompts, before, build);
        assert_eq!(playing(&schedule, before), "old");
        assert_eq!(
            playing(&schedule, midnight - chrono::Duration::milliseconds(1)),
            "old"
        );
        assert_eq!(playing(&schedule, midnight), "new");
        // Loaded after midnight: only the new version's stretch is built.
        let later = PlaylistSchedule::build(&prompts, at("2027-02-01T00:00:00Z"), build);
        assert_eq!(later.stretches.len(), 1);
        assert_eq!(playing(&later, at("2027-02-01T00:00:00Z")), "new");
    }

    #[test]
    fn a_changed_prompt_file_changes_its_lines_and_the_hash() {
        let before = live(BASE, &[("warn", "a"), ("busy", "b")]);
        let after = live(BASE, &[("warn", "a2"), ("busy", "b")]);
        let changes = decide(&before, &after, false).unwrap();
        assert_eq!(changes.prompts_changed, ["warn"]);
        assert_eq!(changes.lines_changed, ["100"]);
        assert!(changes.lines_added.is_empty() && changes.prompts_added.is_empty());
        assert_ne!(before.sha256, after.sha256);
        let same = live(BASE, &[("warn", "a"), ("busy", "b")]);
        assert_eq!(same.sha256, before.sha256);
        assert!(decide(&before, &same, false).unwrap().is_empty());
    }

    #[test]
    fn lines_added_removed_and_changed_are_named() {
        let before = live(BASE, &[("warn", "a"), ("busy", "b")]);
        let text = BASE
            .replace("number = \"200\"", "number = \"300\"")
            .replace("court = \"A\"", "court = \"A2\"");
        let after = live(&text, &[("warn", "a"), ("busy", "b")]);
        let changes = decide(&before, &after, false).unwrap();
        assert_eq!(changes.lines_added, ["300"]);
        assert_eq!(changes.lines_removed, ["200"]);
        assert_eq!(changes.lines_changed, ["100"]);
        assert_eq!(
            changes.to_string(),
            "lines added: 300; lines removed: 200; lines changed: 100"
        );
        let event = applied_event(&Requester::Signal, Some(&before), &after, changes);
        assert_eq!(event.requested_by, "sighup");
        assert_eq!(event.previous_sha256, before.sha256);
        assert_eq!(event.config_sha256, after.sha256);
        assert_eq!(event.prompts.len(), 2);
    }

    #[test]
    fn restart_only_keys_are_refused_by_name() {
        let before = live(BASE, &[("warn", "a"), ("busy", "b")]);
        let text = format!(
            "[sip]\nlisten = \"127.0.0.1:5099\"\n[media]\nrtp_ports = \"30000-30099\"\nleading_silence_ms = 400\nthreads = 2\nrealtime = true\n{BASE}"
        );
        let after = live(&text, &[("warn", "a"), ("busy", "b")]);
        let refused = decide(&before, &after, true).unwrap_err();
        assert_eq!(
            refused.keys,
            [
                "media.realtime",
                "media.rtp_ports",
                "media.threads",
                "sip.listen"
            ]
        );
        assert!(refused.to_string().contains("restart needed"), "{refused}");
        // The lead-in is live: it only changes playlists.
        let lead_in = format!("[media]\nleading_silence_ms = 400\n{BASE}");
        let after = live(&lead_in, &[("warn", "a"), ("busy", "b")]);
        assert!(decide(&before, &after, true).is_ok());
    }

    #[test]
    fn recording_cannot_start_without_a_restart() {
        let before = live(BASE, &[("warn", "a"), ("busy", "b")]);
        let text = BASE.replace(
            "prompt = \"busy\"\noperator = \"sip:op@127.0.0.1:5070\"\nrecord_audio = \"never\"",
            "prompt = \"busy\"\noperator = \"sip:op@127.0.0.1:5070\"\nrecord_audio = \"always\"",
        );
        let after = live(&text, &[("warn", "a"), ("busy", "b")]);
        assert_eq!(
            decide(&before, &after, false).unwrap_err().keys,
            ["lines[1].record_audio"]
        );
        assert_eq!(
            decide(&before, &after, true).unwrap().lines_changed,
            ["200"]
        );
    }

    #[test]
    fn a_changed_calendar_file_changes_the_lines_using_it_and_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let calendar = dir.path().join("cn.txt");
        let hours = format!(
            "[hours.office]\nzone = \"Asia/Shanghai\"\nweekly = [\"mon-fri 09:00-17:00\"]\ncalendars = [\"{}\"]\n{}",
            calendar.display(),
            BASE.replacen("prompt = \"warn\"", "prompt = \"warn\"\nhours = \"office\"\nafter_hours = { prompt = \"busy\" }", 1)
        );
        std::fs::write(&calendar, "2026-10-01..2026-10-07 off 国庆节\n").unwrap();
        let before = live(&hours, &[("warn", "a"), ("busy", "b")]);
        std::fs::write(&calendar, "2026-10-01..2026-10-08 off 国庆节\n").unwrap();
        let after = live(&hours, &[("warn", "a"), ("busy", "b")]);
        assert_ne!(before.sha256, after.sha256);
        let changes = decide(&before, &after, false).unwrap();
        assert_eq!(changes.lines_changed, ["100"]);
    }

    #[test]
    fn the_hash_ignores_key_order() {
        let a = serde_json::json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b: Value = serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap();
        let none = BTreeMap::new();
        assert_eq!(config_sha256(&a, &[], &none), config_sha256(&b, &[], &none));
        let mut text = String::new();
        canonical_json(&a, &mut text);
        assert_eq!(text, r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }
}
