//! `courtline prompts check`: what a recording will sound like on the phone
//! before it goes live: length, level, clipping, silence at both ends, sample
//! rate and what G.711 and G.722 callers will hear of it, with warnings for a
//! warning that is too quiet, clipped or starts with speech.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::switchboard::media::prompt::{Prompt, PromptLevels, MIN_WIDEBAND_FILE_RATE};

/// `courtline prompts ...`.
#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// Measure prompt files (or every prompt of the configuration) and warn about
    /// what callers would hear badly.
    Check {
        /// WAV files to check; none: every `[prompts.<id>]` of `--config`.
        files: Vec<PathBuf>,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        strict: bool,
    },
}

/// Runs a `prompts` subcommand.
pub fn run(config_path: &Path, command: PromptsCommand) -> anyhow::Result<ExitCode> {
    let PromptsCommand::Check { files, strict } = command;
    // (name, file) to check, and the silence courtline plays before them.
    let (targets, lead_in_ms) = if files.is_empty() {
        let config = match Config::load(config_path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("✗ {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        // Every version, scheduled ones included: each will be played to callers.
        let targets: Vec<(String, PathBuf)> = config
            .prompts
            .iter()
            .flat_map(|(id, prompt)| {
                let scheduled = prompt.versions.iter().map(move |version| {
                    (
                        format!(
                            "prompt {id} from {} ({})",
                            version.valid_from.to_rfc3339(),
                            version.file.display()
                        ),
                        version.file.clone(),
                    )
                });
                std::iter::once((
                    format!("prompt {id} ({})", prompt.file.display()),
                    prompt.file.clone(),
                ))
                .chain(scheduled)
            })
            .collect();
        (targets, config.media.leading_silence_ms)
    } else {
        // A file on its own is judged as it is: no lead-in is assumed before it.
        let targets = files
            .into_iter()
            .map(|file| (file.display().to_string(), file))
            .collect();
        (targets, 0)
    };
    let mut failed = false;
    let mut warnings = 0;
    for (label, file) in targets {
        let prompt = match Prompt::load("", "", &file) {
            Ok(prompt) => prompt,
            Err(e) => {
                eprintln!("✗ {e}");
                failed = true;
                continue;
            }
        };
        println!("{}", report(&prompt, &label));
        for warning in prompt_warnings(&prompt.levels, lead_in_ms) {
            eprintln!("! {label}: {warning}");
            warnings += 1;
        }
    }
    if failed || (strict && warnings > 0) {
        if strict && warnings > 0 {
            eprintln!("✗ {warnings} warning(s) above, and --strict treats warnings as errors");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything doubtful about a recording played after `lead_in_ms` of silence.
pub fn prompt_warnings(levels: &PromptLevels, lead_in_ms: u32) -> Vec<String> {
    let mut warnings = levels.warnings();
    warnings.extend(levels.speech_at_start(lead_in_ms));
    warnings
}

/// The measurements of one prompt, and what each codec carries of it.
fn report(prompt: &Prompt, label: &str) -> String {
    let levels = &prompt.levels;
    let mut text = format!(
        "✓ {label}: {:.1} s at {} Hz, peak {:.1} dBFS, RMS {:.1} dBFS, {} clipped samples, \
         {} ms of silence before the first sound and {} ms after the last, sha256 {}",
        f64::from(levels.duration_ms) / 1000.0,
        levels.sample_rate,
        levels.peak_dbfs,
        levels.rms_dbfs,
        levels.clipped_samples,
        levels.quiet_start_ms,
        levels.quiet_end_ms,
        prompt.sha256,
    );
    let carried = |pcm: &[i16], rate: u32| {
        let samples: Vec<f32> = pcm.iter().map(|&s| f32::from(s)).collect();
        let heard = PromptLevels::measure(&samples, rate);
        format!(
            "RMS {:.1} dBFS ({:.1} dB of the file's level lies above the band and is lost)",
            heard.rms_dbfs,
            (levels.rms_dbfs - heard.rms_dbfs).max(0.0)
        )
    };
    text.push_str(&format!(
        "\n    G.711 (8 kHz, band-limited to 3.4 kHz): {}",
        carried(prompt.frames.pcm8k(), 8000)
    ));
    text.push_str(&match prompt.frames.pcm16k() {
        Some(pcm16k) => format!(
            "\n    G.722 (16 kHz, band-limited to 7 kHz): {}",
            carried(pcm16k, 16000)
        ),
        None => format!(
            "\n    G.722: not offered: the file is {} Hz, under {MIN_WIDEBAND_FILE_RATE} Hz, so wideband callers get G.711",
            levels.sample_rate
        ),
    });
    text
}
