//! `courtline check`: everything start-up would refuse, found before going live.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::media::codec::Codec;

/// Validates the configuration and loads every prompt; prints a summary or every problem.
pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("✗ {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("✓ {}: configuration is valid", config.source);
    let prompts = match super::serve::load_prompts(&config) {
        Ok(prompts) => prompts,
        Err(problems) => {
            for problem in problems {
                eprintln!("✗ {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut ids: Vec<&String> = prompts.keys().collect();
    ids.sort();
    for id in ids {
        let p = &prompts[id];
        let version = if p.version.is_empty() {
            String::new()
        } else {
            format!("version {}, ", p.version)
        };
        println!(
            "✓ prompt {id}: {} ({:.1} s, {version}sha256 {})",
            p.path.display(),
            f64::from(p.frames.duration_ms()) / 1000.0,
            p.sha256
        );
    }
    let playlists = super::serve::playlists(&config, &prompts);
    for line in &config.lines {
        let ids = line.prompt.items();
        let playing = match (ids.len(), playlists.get(&line.number)) {
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
        let codecs = match playlists.get(&line.number) {
            Some(playlist) if playlist.supports(Codec::G722) => "G.722 and G.711",
            _ => "G.711 only (a prompt is below 16 kHz)",
        };
        println!(
            "✓ line {} ({}): {playing}, {codecs}, operator {}, ring {} s",
            line.number,
            line.court,
            line.operator.items().join(" → "),
            line.ring_timeout_s
        );
    }
    println!(
        "✓ SIP on {} (UDP), max {} calls, RTP ports {}",
        config.sip.listen, config.sip.max_calls, config.media.rtp_ports
    );
    let records = &config.records;
    if records.service.embedded {
        println!(
            "✓ records service embedded on {} ({}); `courtline calls`/`records` connect to {}",
            records.service.listen, records.service.database, records.endpoint
        );
    } else {
        println!("✓ records service at {}", records.endpoint);
    }
    Ok(ExitCode::SUCCESS)
}
