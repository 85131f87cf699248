//! The `courtline` command line: `serve`, `check`, `prompts check`, `calls list`, `records serve`,
//! `reports`, `reload`.
//!
//! The edge of both processes: `serve` starts the switchboard (and, when
//! configured, the records service in the same process), `records serve` the
//! records service alone; `calls` and `records` are clients of the service.

pub mod admin;
pub mod calls;
pub mod check;
pub mod patterns;
pub mod probe;
pub mod prompts;
pub mod records;
pub mod reload;
pub mod reports;
pub mod serve;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_PATH;

/// courtline: plays the courts' "three rules" warning to every caller before
/// connecting them, and keeps a record of every call.
#[derive(Debug, Parser)]
#[command(name = "courtline", version, after_help = FILES)]
pub struct Cli {
    /// Configuration file. Without it: config/courtline.toml in the working
    /// directory, else /etc/courtline/courtline.toml (the Debian package's),
    /// else the example built into courtline.
    #[arg(long, global = true, default_value = DEFAULT_PATH, env = "COURTLINE_CONFIG")]
    pub config: PathBuf,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The end of `courtline --help`: where the Debian package puts things.
const FILES: &str = "\
Files (Debian package):
  /etc/courtline/courtline.toml     configuration (`courtline check` validates it)
  /usr/share/courtline/audio/       the prompts: the warning, greetings, notices
  /usr/share/courtline/config/      holiday calendars, the Shanghai example
  /var/lib/courtline/               records database, spool, recordings, signing key
  /usr/lib/systemd/system/courtline.service
                                    `systemctl enable --now courtline`; logs: `journalctl -u courtline`
Every configuration key can be overridden as COURTLINE_<SECTION>__<KEY>.
Each command has its own --help (e.g. `courtline calls list --help`).";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the switchboard (and, unless disabled, the embedded records service).
    Serve,
    /// Validate the configuration and every prompt file, then exit.
    Check {
        /// Fail (exit 1) on warnings too: clipped, very quiet or very short prompts,
        /// sound at the very start of the stream, a warning longer than the RTP timeout.
        #[arg(long)]
        strict: bool,
    },
    /// Prompt files: `prompts check` measures them as callers will hear them.
    #[command(subcommand)]
    Prompts(prompts::PromptsCommand),
    /// Query call records.
    #[command(subcommand)]
    Calls(calls::CallsCommand),
    /// Call a line as a synthetic probe (signed, left out of statistics) and
    /// check the warning it plays; exit 1 naming the line and what was wrong.
    Probe(probe::ProbeArgs),
    /// The records service.
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// "Three rules" reports: open, fill in, submit, review, list, export.
    #[command(subcommand)]
    Reports(reports::ReportsCommand),
    /// Patterns across calls: several courts in a few days, repeated calls, called
    /// again after a report, hang-ups during the warning, calls after hours.
    Patterns(patterns::PatternsArgs),
    /// Ask the running `courtline serve` to reload its configuration (like SIGHUP):
    /// every file is loaded and checked first; a refusal prints why and exits 1.
    Reload {
        /// The admin endpoint to ask (default: [admin] listen of --config).
        #[arg(long)]
        admin: Option<String>,
    },
}

/// The binary's allocator hook, run each time a runtime worker thread runs
/// out of work; kept for runtimes started later (the embedded records
/// service's). Unset in tests, which start no binary.
static WORKER_IDLE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Runs the binary's hook for a runtime worker that ran out of work, if any.
fn on_worker_idle() {
    if let Some(hook) = WORKER_IDLE.get() {
        hook();
    }
}

/// Entry point of the binary. `worker_idle` runs each time a runtime worker
/// thread runs out of work (the binary's allocator hook).
pub fn main(worker_idle: fn()) -> ExitCode {
    let _ = WORKER_IDLE.set(worker_idle);
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_worker_idle)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("courtline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::serve_until_signal(&cli.config).await,
            Command::Check { strict } => check::run(&cli.config, strict),
            Command::Prompts(command) => prompts::run(&cli.config, command),
            Command::Calls(command) => calls::run(&cli.config, command).await,
            Command::Probe(args) => probe::run(&cli.config, args).await,
            Command::Records(command) => records::run(&cli.config, command).await,
            Command::Reports(command) => reports::run(&cli.config, command).await,
            Command::Patterns(args) => patterns::run(&cli.config, args).await,
            Command::Reload { admin } => reload::run(&cli.config, admin).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("courtline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs by default, JSON with `--log-json`; `RUST_LOG` overrides
/// the default filter, which keeps rsipstack's per-packet logs out.
fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,rsipstack=warn,sqlx=warn,h2=warn,tower=warn")
    });
    let colour = log_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Whether log lines get ANSI colours: only on a terminal (escape codes in a
/// log file or a pipe to journald are noise), and never when `NO_COLOR` is set
/// to anything non-empty (https://no-color.org).
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))));
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
    }
}
