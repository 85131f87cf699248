//! `courtline check`: everything start-up would refuse, found before going live,
//! and what would work but deserves a second look (warnings; `--strict` fails on them).

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConnectMode, HuntStrategy};
use crate::switchboard::live::PlaylistSchedule;
use crate::switchboard::media::codec::Codec;
use crate::switchboard::media::prompt::MIN_QUIET_BEFORE_SOUND_MS;
use crate::switchboard::priority::realtime_ignored;

/// Validates the configuration and loads and measures every prompt. Problems
/// (✗) and warnings (!) go to stderr, what passed (✓) to stdout; "configuration
/// is valid" is printed last, and only when nothing failed.
pub fn run(config_path: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("✗ {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let prompts = match super::serve::load_prompts(&config) {
        Ok(prompts) => prompts,
        Err(problems) => {
            for problem in problems {
                eprintln!("✗ {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut passed = Vec::new();
    let mut warnings = Vec::new();
    for (id, versions) in &prompts {
        for (n, scheduled) in versions.iter().enumerate() {
            let p = &scheduled.prompt;
            let version = if p.version.is_empty() {
                String::new()
            } else {
                format!("version {}, ", p.version)
            };
            // As configured, offset included: the court's midnight reads as such.
            let from = n
                .checked_sub(1)
                .and_then(|i| config.prompts.get(id)?.versions.get(i))
                .map(|version| format!(" from {}", version.valid_from.to_rfc3339()))
                .unwrap_or_default();
            let levels = &p.levels;
            passed.push(format!(
                "✓ prompt {id}{from}: {} ({:.1} s, peak {:.1} dBFS, RMS {:.1} dBFS, {version}sha256 {})",
                p.path.display(),
                f64::from(p.frames.duration_ms()) / 1000.0,
                levels.peak_dbfs,
                levels.rms_dbfs,
                p.sha256
            ));
            for warning in levels.warnings() {
                warnings.push(format!(
                    "prompt {id}{from} ({}): {warning}",
                    p.path.display()
                ));
            }
        }
    }
    // What callers hear now; later versions were checked above, one by one.
    let now = chrono::Utc::now();
    let schedule = PlaylistSchedule::build(&prompts, now, |chosen| {
        super::serve::playlists(&config, chosen)
    });
    let playlists = schedule.at(now);
    for line in &config.lines {
        let ids = line.prompt.items();
        let playlist = playlists.in_hours.get(&line.number);
        let playing = match (ids.len(), playlist) {
            (1, Some(playlist)) => format!(
                "prompt {} ({:.1} s incl. {} ms lead-in)",
                ids.join(""),
                f64::from(playlist.duration_ms()) / 1000.0,
                config.media.leading_silence_ms
            ),
            (_, Some(playlist)) => format!(
                "prompts {} ({:.1} s incl. {} ms lead-in and {} ms gaps)",
                ids.join(" → "),
                f64::from(playlist.duration_ms()) / 1000.0,
                config.media.leading_silence_ms,
                line.prompt_gap_ms
            ),
            (_, None) => format!("prompts {} (not loaded)", ids.join(" → ")),
        };
        let codecs = match playlist {
            Some(playlist) if playlist.supports(Codec::G722) => "G.722 and G.711",
            _ => "G.711 only (a prompt is below 16 kHz)",
        };
        passed.push(format!(
            "✓ line {} ({}): {playing}, {codecs}, operator {} ({}), ring {} s{}{}",
            line.number,
            line.court,
            line.operator.uris().join(match line.hunt {
                HuntStrategy::Simultaneous => " + ",
                HuntStrategy::Sequential | HuntStrategy::RoundRobin => " → ",
            }),
            line.hunt.name(),
            line.ring_timeout_s,
            match line.connect {
                ConnectMode::Refer => ", transferred by REFER (bridged if refused)",
                ConnectMode::Bridge => "",
            },
            line.failover_prompt
                .as_ref()
                .map(|id| format!(", nobody answering: {id} then BYE"))
                .unwrap_or_default(),
        ));
        let Some(playlist) = playlist else { continue };
        let lead_in = config.media.leading_silence_ms;
        if let Some(first) = playlist.prompts().first() {
            if first.levels.sound_too_soon(lead_in) {
                warnings.push(format!(
                    "line {}: sound starts {} ms into the stream ({lead_in} ms lead-in + {} ms of quiet at the start of prompt {}), under {MIN_QUIET_BEFORE_SOUND_MS} ms: a phone that opens its audio late cuts the first syllable; raise [media] leading_silence_ms (200 is usual)",
                    line.number,
                    lead_in + first.levels.quiet_start_ms,
                    first.levels.quiet_start_ms,
                    first.id
                ));
            }
        }
    }
    for (name, hours) in &config.office_hours {
        let today = chrono::Utc::now().date_naive();
        match hours.calendar().span() {
            Some((first, last)) => {
                passed.push(format!(
                    "✓ hours {name}: zone {}, holiday calendar {first} to {last}",
                    hours.zone()
                ));
                // A calendar that has run out silently treats holidays as working days.
                if last < today + chrono::Days::new(60) {
                    warnings.push(format!(
                        "hours {name}: the holiday calendar ends on {last}; add next year's State Council dates (format: config/calendars/cn-2026.txt)"
                    ));
                }
            }
            None => warnings.push(format!(
                "hours {name}: no holiday calendar, so public holidays count as working days; set calendars = [\"config/calendars/cn-2026.txt\", ...]"
            )),
        }
    }
    for line in config.lines.iter().filter(|line| !line.hours.is_empty()) {
        let Some(after) = &line.after_hours else {
            continue;
        };
        let then = match &after.operator {
            Some(duty) => format!("then duty {}", duty.uris().join(" → ")),
            None => "then courtline hangs up".into(),
        };
        passed.push(format!(
            "✓ line {} outside hours {}: prompts {} ({}), {then}",
            line.number,
            line.hours,
            after.prompt.items().join(" → "),
            if playlists.after_hours.contains_key(&line.number) {
                "loaded"
            } else {
                "not loaded"
            },
        ));
    }
    let media_threads = config.media.threads.resolve();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let realtime_ignored = realtime_ignored(media_threads, cores);
    let realtime = config.media.realtime && realtime_ignored.is_none();
    passed.push(format!(
        "✓ SIP on {} (UDP), max {} calls, RTP ports {}, {media_threads} media engine thread(s){}",
        config.sip.listen,
        config.sip.max_calls,
        config.media.rtp_ports,
        if realtime { ", real-time" } else { "" }
    ));
    if media_threads > cores {
        warnings.push(format!(
            "[media] threads = {media_threads} is more than the {cores} core(s) this process may use: the extra media threads only take turns with the others (use {cores} or \"auto\")"
        ));
    }
    if let (true, Some(why)) = (config.media.realtime, realtime_ignored) {
        warnings.push(why);
    }
    let records = &config.records;
    passed.push(if records.service.embedded {
        format!(
            "✓ records service embedded on {} ({}); `courtline calls`/`records` connect to {}",
            records.service.listen, records.service.database, records.endpoint
        )
    } else {
        format!("✓ records service at {}", records.endpoint)
    });

    for line in &passed {
        println!("{line}");
    }
    for warning in &warnings {
        eprintln!("! {warning}");
    }
    let source = match std::path::absolute(config_path) {
        Ok(absolute) if config_path.is_relative() && config_path.exists() => {
            format!("{} ({})", config.source, absolute.display())
        }
        _ => config.source.clone(),
    };
    match (warnings.len(), strict) {
        (0, _) => println!("✓ {source}: configuration is valid"),
        (count, false) => println!(
            "✓ {source}: configuration is valid, with {count} warning(s) above (`courtline check --strict` fails on warnings)"
        ),
        (count, true) => {
            eprintln!("✗ {source}: {count} warning(s) above, and --strict treats warnings as errors");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
