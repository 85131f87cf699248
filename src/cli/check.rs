//! `courtline check`: everything start-up would refuse, found before going live.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

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
        println!(
            "✓ prompt {id}: {} ({:.1} s incl. {} ms lead-in, sha256 {})",
            p.path.display(),
            f64::from(p.frames.duration_ms()) / 1000.0,
            config.media.leading_silence_ms,
            p.sha256
        );
    }
    for line in &config.lines {
        println!(
            "✓ line {} ({}): prompt {}, operator {}, ring {} s",
            line.number,
            line.court,
            line.prompt,
            line.operator.uris().join(" → "),
            line.ring_timeout_s
        );
    }
    println!(
        "✓ SIP on {} (UDP), max {} calls, RTP ports {}",
        config.sip.listen, config.sip.max_calls, config.media.rtp_ports
    );
    Ok(ExitCode::SUCCESS)
}
