//! Real `courtline records serve` processes: a config file each, a JSON log, its
//! gRPC and admin endpoints on loopback; killed by PID when a test ends, also on
//! failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courtline::contract::connect::{connect, ClientOptions, RecordsClient};
use tokio::time::{sleep, Instant};

use super::courtline_bin;

/// A running `courtline records serve`, killed when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    /// Its admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two services, "a" and "b", of one shared database, both running; "a" is the
/// sequencer: it started first and held the lock before "b" started.
pub struct SharedPair {
    /// The first service, the sequencer.
    pub a: ServiceChild,
    /// The second service, the standby.
    pub b: ServiceChild,
    /// "a"'s process.
    pub first: Process,
    /// "b"'s process.
    pub second: Process,
}

impl SharedPair {
    /// Starts the pair on `database`, with the deployment's signing key in `dir`.
    pub async fn start(dir: &Path, database: &str) -> SharedPair {
        let key = dir.join("deployment-signing.key");
        let a = ServiceChild::shared(dir, "a", database, &key);
        let b = ServiceChild::shared(dir, "b", database, &key);
        let first = a.start().await;
        a.wait_for_log("now the sequencer", 1).await;
        let second = b.start().await;
        SharedPair {
            a,
            b,
            first,
            second,
        }
    }
}

/// One records service's config, port and log; started (and restarted) as a child.
pub struct ServiceChild {
    /// Its config file.
    pub config: PathBuf,
    /// Its gRPC port.
    pub port: u16,
    /// Where its JSON log goes (appended to by each start).
    pub log: PathBuf,
}

impl ServiceChild {
    /// A service of a shared database (`shared_database`, PostgreSQL) signing with `key`.
    pub fn shared(dir: &Path, name: &str, database: &str, key: &Path) -> ServiceChild {
        ServiceChild::new(dir, name, database, key, true)
    }

    /// A service alone on its database (SQLite, or PostgreSQL of its own).
    pub fn alone(dir: &Path, name: &str, database: &str, key: &Path) -> ServiceChild {
        ServiceChild::new(dir, name, database, key, false)
    }

    /// Writes its config in `dir`: gRPC and admin endpoints on loopback, no console.
    fn new(dir: &Path, name: &str, database: &str, key: &Path, shared: bool) -> ServiceChild {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prompt = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio/three_rules_zh.wav");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[records]
endpoint = "http://127.0.0.1:{port}"
spool_dir = "{spool}"
[records.service]
embedded = false
listen = "127.0.0.1:{port}"
database = "{database}"
shared_database = {shared}
signing_key_file = "{key}"
recordings_dir = "{evidence}"
checkpoint_every_events = 500
checkpoint_every_minutes = 1
[records.web]
listen = ""
[admin]
listen = "127.0.0.1:0"
[prompts.test]
file = "{prompt}"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "test"
operator = "sip:nobody@127.0.0.1:9"
"#,
                spool = dir.join(format!("{name}-spool")).display(),
                key = key.display(),
                evidence = dir.join(format!("{name}-evidence")).display(),
                prompt = prompt.display(),
            ),
        )
        .unwrap();
        ServiceChild {
            config,
            port,
            log: dir.join(format!("{name}.log")),
        }
    }

    /// Its gRPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (appending to its log) and waits until it listens.
    pub async fn start(&self) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let starts = log_lines(&self.log, "records service listening");
        let child = Command::new(courtline_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--log-json")
            .args(["records", "serve"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Killed by its drop should the waits below fail.
        let mut process = Process {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        self.wait_for_log("records service listening", starts + 1)
            .await;
        let line = self.nth_log_line("admin endpoint listening", starts + 1);
        process.admin = line["fields"]["addr"]
            .as_str()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line}"));
        process
    }

    /// Waits up to 20 s for the `nth` log line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, nth: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while log_lines(&self.log, needle) < nth {
            assert!(
                Instant::now() < deadline,
                "no {nth}. {needle:?} in {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `nth` log line containing `needle`, parsed (it must be there).
    fn nth_log_line(&self, needle: &str, nth: usize) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = text
            .lines()
            .filter(|line| line.contains(needle))
            .nth(nth - 1)
            .unwrap_or_else(|| panic!("no {nth}. {needle:?} in {}:\n{text}", self.log.display()));
        serde_json::from_str(line).unwrap()
    }

    /// A client of its gRPC endpoint (no token: loopback, before the first token).
    pub async fn client(&self) -> RecordsClient {
        connect(&ClientOptions::new(self.endpoint())).await.unwrap()
    }
}

/// Log lines of `log` containing `needle`.
pub fn log_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}
