//! The signed header that marks a synthetic probe call, so the switchboard
//! records it as a probe and leaves it out of statistics, while a caller who
//! copies the header cannot hide a call: only a signature made with the
//! switchboard's key, over this call's Call-ID and a time near now, counts.
//!
//! `X-Courtline-Probe: t=<Unix seconds>; sig=<hex HMAC-SHA256(key, "courtline-probe\n<Call-ID>\n<t>")>`,
//! accepted within [`MAX_SKEW`] of the switchboard's clock. Signing and
//! checking are pure (the clock is an argument); reading or making the key
//! file is the thin part at the end.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rsipstack::sip::Request;
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "X-Courtline-Probe";
/// How far the signed time may be from the switchboard's clock: clocks of two
/// machines differ a little, and a copied header must not stay good for long.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Random bytes in a key file courtline makes.
const KEY_BYTES: usize = 32;

/// Why a probe header is not accepted (the call is then an ordinary call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not `t=<seconds>; sig=<hex>`.
    #[error("not t=<seconds>; sig=<hex>")]
    Malformed,
    /// Signed too long before or after now.
    #[error("signed {0} s away from this switchboard's clock (at most 300 s)")]
    Stale(u64),
    /// The signature is not this switchboard's key's over this Call-ID and time.
    #[error("the signature does not match (another key, or another call's header)")]
    BadSignature,
}

/// The key probes sign with. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct ProbeKey(Vec<u8>);

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeKey(…)")
    }
}

impl ProbeKey {
    /// A key from its secret bytes (`[probe] key`, or a key file's text).
    pub fn new(secret: &[u8]) -> ProbeKey {
        ProbeKey(secret.to_vec())
    }

    fn mac(&self, call_id: &str, t: u64) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("courtline-probe\n{call_id}\n{t}").as_bytes());
        mac
    }

    /// The header value for a probe INVITE with `call_id`, signed at `at`.
    pub fn sign(&self, call_id: &str, at: SystemTime) -> String {
        let t = unix_seconds(at);
        let sig = hex::encode(self.mac(call_id, t).finalize().into_bytes());
        format!("t={t}; sig={sig}")
    }

    /// Whether `value` is this key's signature over `call_id`, made within
    /// [`MAX_SKEW`] of `now`.
    pub fn verify(&self, value: &str, call_id: &str, now: SystemTime) -> Result<(), Rejected> {
        let mut t = None;
        let mut sig = None;
        for part in value.split(';') {
            match part.trim().split_once('=') {
                Some(("t", text)) => t = text.parse::<u64>().ok(),
                Some(("sig", text)) => sig = hex::decode(text).ok(),
                _ => return Err(Rejected::Malformed),
            }
        }
        let (Some(t), Some(sig)) = (t, sig) else {
            return Err(Rejected::Malformed);
        };
        let skew = unix_seconds(now).abs_diff(t);
        if skew > MAX_SKEW.as_secs() {
            return Err(Rejected::Stale(skew));
        }
        // Constant-time comparison.
        self.mac(call_id, t)
            .verify_slice(&sig)
            .map_err(|_| Rejected::BadSignature)
    }

    /// Reads the key file at `path`; `courtline serve` makes it.
    pub fn load(path: &Path) -> std::io::Result<ProbeKey> {
        let text = std::fs::read_to_string(path)?;
        Ok(ProbeKey::new(text.trim().as_bytes()))
    }

    /// Reads the key file at `path`, or makes one with a random key (readable
    /// by its owner only) when there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<ProbeKey> {
        match ProbeKey::load(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = hex::encode(rand::random::<[u8; KEY_BYTES]>());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{text}\n").as_bytes())?;
                file.sync_all()?;
                Ok(ProbeKey::new(text.as_bytes()))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ProbeKey::load(path),
            Err(e) => Err(e),
        }
    }
}

/// The value of the request's probe header, if it has one.
pub fn value_in(request: &Request) -> Option<String> {
    request.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(HEADER)
            .then(|| value.trim().to_string())
    })
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_signature_holds_for_its_call_and_key_near_its_time_only() {
        let key = ProbeKey::new(b"0123456789abcdef0123456789abcdef");
        let value = key.sign("probe-1@courtline", at(1_800_000_000));
        assert!(value.starts_with("t=1800000000; sig="), "{value}");
        assert_eq!(
            key.verify(&value, "probe-1@courtline", at(1_800_000_000)),
            Ok(())
        );
        // The two machines' clocks may differ a little.
        assert_eq!(
            key.verify(&value, "probe-1@courtline", at(1_800_000_299)),
            Ok(())
        );
        assert_eq!(
            key.verify(&value, "probe-1@courtline", at(1_799_999_701)),
            Ok(())
        );
        assert_eq!(
            key.verify(&value, "probe-1@courtline", at(1_800_000_301)),
            Err(Rejected::Stale(301))
        );
        // Copied onto another call, or checked with another key: refused.
        assert_eq!(
            key.verify(&value, "caller-2@pbx", at(1_800_000_000)),
            Err(Rejected::BadSignature)
        );
        let other = ProbeKey::new(b"another key, another switchboard");
        assert_eq!(
            other.verify(&value, "probe-1@courtline", at(1_800_000_000)),
            Err(Rejected::BadSignature)
        );
        // A forged time with the old signature does not hold either.
        let moved = value.replace("t=1800000000", "t=1800000100");
        assert_eq!(
            key.verify(&moved, "probe-1@courtline", at(1_800_000_100)),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        let key = ProbeKey::new(b"0123456789abcdef");
        let now = at(1_800_000_000);
        for value in [
            "",
            "yes",
            "t=1800000000",
            "sig=00",
            "t=x; sig=00",
            "t=1800000000; sig=zz",
            "t=1800000000; sig=00; x=1",
        ] {
            assert_eq!(
                key.verify(value, "c", now),
                Err(Rejected::Malformed),
                "{value:?}"
            );
        }
        assert_eq!(
            key.verify("t=1800000000; sig=00", "c", now),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/probe.key");
        let made = ProbeKey::load_or_create(&path).unwrap();
        let read = ProbeKey::load(&path).unwrap();
        assert_eq!(made.0, read.0);
        assert_eq!(made.0.len(), 2 * KEY_BYTES);
        assert_eq!(ProbeKey::load_or_create(&path).unwrap().0, made.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(format!("{made:?}").contains('…'));
    }
}
