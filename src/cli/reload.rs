//! Reloading the configuration of a running `courtline serve`: what the service
//! does on `SIGHUP` and `POST /reload` ([`Reloader`]), and `courtline reload`,
//! the command that asks it to over the admin endpoint.
//!
//! Why the admin endpoint and not a control socket of its own: it is already
//! there (`[admin] listen`, loopback by default), monitoring already reaches
//! it, and a reload only re-reads files that admins alone can write. The
//! endpoint takes `POST /reload` from loopback addresses only; with the
//! endpoint turned off, `SIGHUP` still reloads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use super::serve::{load_live, prompt_problems_text};
use crate::config::{Config, DEFAULT_PATH};
use crate::switchboard::endpoint::Monitor;
use crate::switchboard::live::Requester;

/// `User-Agent` of `courtline reload`, so the service records "cli" rather than "admin_http".
pub const CLI_USER_AGENT: &str = "courtline-reload";
/// Header carrying the OS user `courtline reload` runs as (stated, not verified).
pub const USER_HEADER: &str = "x-courtline-user";

/// How long `courtline reload` waits for the service's answer (prompts are
/// decoded and encoded meanwhile).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Reloads the running service's configuration from its file.
#[derive(Clone)]
pub struct Reloader {
    /// The main configuration file `courtline serve` was started with.
    path: PathBuf,
    /// The running switchboard.
    monitor: Monitor,
}

/// How a reload ended, in words for the log, the HTTP answer and `courtline reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// In force for new calls; calls in progress keep theirs.
    Applied(String),
    /// Refused: the configuration in force stays.
    Refused(String),
}

impl Reloader {
    /// Reloads `path` into the switchboard `monitor` watches.
    pub fn new(path: PathBuf, monitor: Monitor) -> Reloader {
        Reloader { path, monitor }
    }

    /// Reads and checks every file (configuration, include_dir, every prompt
    /// version, decoded and encoded), then lets the switchboard decide and swap.
    pub async fn reload(&self, requester: Requester) -> ReloadOutcome {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            load_live(config).map_err(|problems| prompt_problems_text(&problems))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        let live = match loaded {
            Ok(live) => live,
            Err(problem) => {
                self.monitor.reload_refused(&requester, &problem);
                return ReloadOutcome::Refused(format!(
                    "reload refused; the configuration in force is unchanged:\n{problem}"
                ));
            }
        };
        match self.monitor.apply(live, &requester).await {
            Ok((changes, sha256)) => ReloadOutcome::Applied(format!(
                "configuration reloaded (sha256 {sha256}): {changes}; calls in progress keep the configuration they started with"
            )),
            Err(refused) => ReloadOutcome::Refused(format!("reload refused: {refused}")),
        }
    }
}

/// `courtline reload`: asks the running service to reload its configuration file
/// and prints what it answered; exits 1 when the reload was refused.
pub async fn run(config_path: &Path, admin: Option<String>) -> anyhow::Result<ExitCode> {
    let addr = match admin {
        Some(text) => text.parse::<SocketAddr>().with_context(|| {
            format!("--admin {text:?}: give an address and port, e.g. 127.0.0.1:9460")
        })?,
        None => admin_address(config_path)?,
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let (status, body) = tokio::time::timeout(ANSWER_TIMEOUT, post_reload(addr, &user))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the admin endpoint {addr} within {} s", ANSWER_TIMEOUT.as_secs()))?
        .with_context(|| {
            format!("cannot reach courtline's admin endpoint at {addr} (is `courtline serve` running, with [admin] listen set? --admin names another address)")
        })?;
    if status == 200 {
        println!("{}", body.trim_end());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("✗ {}", body.trim_end());
        Ok(ExitCode::FAILURE)
    }
}

/// Where the service's admin endpoint listens, from `[admin] listen` of the
/// configuration (an unspecified address is reached on loopback). A file that does
/// not load is no reason not to ask: the service says what is wrong with it, so the
/// default address is used then.
fn admin_address(config_path: &Path) -> anyhow::Result<SocketAddr> {
    let configured = match Config::load(config_path) {
        Ok(config) => config.admin.address().ok().flatten(),
        Err(error) => {
            warn!("{error}; asking the admin endpoint at its default address");
            crate::config::AdminConfig::default()
                .address()
                .ok()
                .flatten()
        }
    };
    let Some(mut addr) = configured else {
        anyhow::bail!(
            "[admin] listen is off in {}: courtline reload needs the admin endpoint (or send the service SIGHUP)",
            if config_path.as_os_str().is_empty() { DEFAULT_PATH.as_ref() } else { config_path }.display()
        );
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

/// `POST /reload` to `addr`: the status and the body of the answer.
async fn post_reload(addr: SocketAddr, user: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let user: String = user.chars().filter(|c| c.is_ascii_graphic()).collect();
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {CLI_USER_AGENT}/{}\r\n{USER_HEADER}: {user}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    parse_response(&response).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the admin endpoint's answer is not HTTP",
        )
    })
}

/// The status and body of an HTTP/1.1 answer sent with `Connection: close`
/// (axum sends a plain body with a Content-Length, never chunked, for a string).
fn parse_response(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn answers_are_read_as_status_and_body() {
        let answer = b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 5\r\n\r\nbad\n!";
        assert_eq!(parse_response(answer), Some((422, "bad\n!".to_owned())));
        assert_eq!(parse_response(b"garbage"), None);
    }
}
