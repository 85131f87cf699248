//! The records service's Ed25519 key: signs chain checkpoints and export manifests.
//!
//! The key file holds the 32-byte secret seed as 64 hex digits, after a `#` line that
//! marks it private (files made before that line existed hold the hex alone). If the
//! configured file does not exist the service creates one (mode 0600) and logs the
//! public key, which auditors should write down (`courtline records public-key`
//! prints it again): `verify` and `verify-export` trust a signature only as far as
//! they trust the key it was made with. Nothing prints or logs the seed.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::records::chain::Hash;

/// Domain separation for checkpoint signatures, so one can never pass for a manifest's.
const CHECKPOINT_CONTEXT: &[u8] = b"courtline-checkpoint-v1\n";
/// Domain separation for export manifest signatures.
const MANIFEST_CONTEXT: &[u8] = b"courtline-export-manifest-v1\n";
/// First line of a signing key file, so the file is recognised as private wherever a
/// public key is expected.
const PRIVATE_KEY_HEADER: &str = "# courtline records signing key: PRIVATE (Ed25519 seed); \
     its public key is printed by `courtline records public-key`";
/// What a key file passed as a public key is told to do instead.
pub const PASS_THE_PUBLIC_KEY: &str =
    "this is the private signing key; pass its public key (`courtline records public-key`)";

/// Why the signing key could not be loaded or a public key parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read, created or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The key file's content is not 64 hex digits.
    #[error("signing key file {path} does not hold a 32-byte hex Ed25519 seed")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// A public key given on the command line or in a file is not 32 bytes of hex.
    #[error("{0:?} is not an Ed25519 public key (64 hex digits, or a file holding them)")]
    PublicKey(String),
    /// The file given as a trusted public key is a private signing key file.
    #[error("{path}: {PASS_THE_PUBLIC_KEY}")]
    PrivateKeyGiven {
        /// The file.
        path: PathBuf,
    },
}

/// The service's signing key.
#[derive(Debug, Clone)]
pub struct RecordsKey {
    /// The secret key.
    signing: SigningKey,
}

impl RecordsKey {
    /// Loads the key from the existing file `path`.
    pub fn load(path: &Path) -> Result<RecordsKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let seed = parse_32(&without_comments(&text)).ok_or_else(|| KeyError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(RecordsKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key from `path`, creating it first if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<RecordsKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(_) => RecordsKey::load(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let key = RecordsKey {
                    signing: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
                };
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                writeln!(
                    file,
                    "{PRIVATE_KEY_HEADER}\n{}",
                    hex::encode(key.signing.to_bytes())
                )
                .map_err(io)?;
                file.sync_all().map_err(io)?;
                warn!(
                    file = %path.display(),
                    public_key = %key.public_key_hex(),
                    fingerprint = %fingerprint(&key.public_key().to_bytes()),
                    "created a new records signing key; note the public key: auditors verify checkpoints and exports against it"
                );
                Ok(key)
            }
            Err(error) => Err(io(error)),
        }
    }

    /// A key from raw seed bytes (tests and benchmarks).
    pub fn from_seed(seed: [u8; 32]) -> RecordsKey {
        RecordsKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as hex, as printed and as stored in checkpoints and manifests.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key().to_bytes())
    }

    /// Signs the statement "the chain's event `seq` has hash `hash`, at `signed_at_ms`".
    pub fn sign_checkpoint(&self, seq: u64, hash: &Hash, signed_at_ms: i64) -> Signature {
        self.signing
            .sign(&checkpoint_message(seq, hash, signed_at_ms))
    }

    /// Signs an export manifest's canonical JSON.
    pub fn sign_manifest(&self, json: &str) -> Signature {
        self.signing
            .sign(&[MANIFEST_CONTEXT, json.as_bytes()].concat())
    }
}

/// The bytes a checkpoint signature covers.
fn checkpoint_message(seq: u64, hash: &[u8], signed_at_ms: i64) -> Vec<u8> {
    [
        CHECKPOINT_CONTEXT,
        &seq.to_be_bytes(),
        hash,
        &signed_at_ms.to_be_bytes(),
    ]
    .concat()
}

/// Whether `signature` by `public_key` covers the checkpoint (`seq`, `hash`, `signed_at_ms`).
pub fn checkpoint_signature_valid(
    public_key: &[u8],
    seq: u64,
    hash: &[u8],
    signed_at_ms: i64,
    signature: &[u8],
) -> bool {
    verify(
        public_key,
        &checkpoint_message(seq, hash, signed_at_ms),
        signature,
    )
}

/// Whether `signature_hex` by `public_key_hex` covers the manifest JSON.
pub fn manifest_signature_valid(public_key_hex: &str, json: &str, signature_hex: &str) -> bool {
    match (hex::decode(public_key_hex), hex::decode(signature_hex)) {
        (Ok(key), Ok(signature)) => verify(
            &key,
            &[MANIFEST_CONTEXT, json.as_bytes()].concat(),
            &signature,
        ),
        _ => false,
    }
}

fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key_bytes) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(&key_bytes)
        .map(|key| key.verify(message, &signature).is_ok())
        .unwrap_or(false)
}

fn parse_32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The key text without `#` comment lines, trimmed.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("")
        .trim()
        .to_owned()
}

/// A short name for a public key, to compare by eye or read over the phone: the
/// first 8 bytes of its SHA-256. Safe to show even for a secret by mistake.
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    format!("SHA256:{}", hex::encode(&Sha256::digest(public_key)[..8]))
}

/// The public key of `seed`, to recognise a private key given where a public one belongs.
pub fn public_key_of_seed(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// A trusted public key given as 64 hex digits (`#` lines ignored, as printed by
/// `courtline records public-key`), or as a file holding them; a signing key file
/// made by courtline is refused as private.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], KeyError> {
    if let Some(key) = parse_32(&without_comments(text)) {
        return Ok(key);
    }
    let path = Path::new(text);
    let content =
        std::fs::read_to_string(path).map_err(|_| KeyError::PublicKey(text.to_owned()))?;
    if content.starts_with(PRIVATE_KEY_HEADER) {
        return Err(KeyError::PrivateKeyGiven {
            path: path.to_path_buf(),
        });
    }
    let key = parse_32(&without_comments(&content))
        .ok_or_else(|| KeyError::PublicKey(text.to_owned()))?;
    info!(file = %path.display(), "using the public key from this file");
    Ok(key)
}

/// The public key of the signing key file at `path`, if it can be read.
pub fn public_key_of_key_file(path: &Path) -> Option<[u8; 32]> {
    RecordsKey::load(path)
        .ok()
        .map(|key| key.public_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_once_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let key = RecordsKey::load_or_create(&path).unwrap();
        let again = RecordsKey::load_or_create(&path).unwrap();
        assert_eq!(key.public_key_hex(), again.public_key_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = key.public_key().to_bytes();
        let signature = key.sign_checkpoint(5, &[7; 32], 99).to_bytes();
        assert!(checkpoint_signature_valid(
            &public, 5, &[7; 32], 99, &signature
        ));
        assert!(!checkpoint_signature_valid(
            &public, 6, &[7; 32], 99, &signature
        ));
        assert!(!checkpoint_signature_valid(
            &public, 5, &[8; 32], 99, &signature
        ));
        let manifest = key.sign_manifest("{}").to_bytes();
        assert!(manifest_signature_valid(
            &key.public_key_hex(),
            "{}",
            &hex::encode(manifest)
        ));
        assert!(!manifest_signature_valid(
            &key.public_key_hex(),
            "{ }",
            &hex::encode(manifest)
        ));
        // A checkpoint signature is not a manifest signature.
        assert!(!manifest_signature_valid(
            &key.public_key_hex(),
            "{}",
            &hex::encode(signature)
        ));
        assert_eq!(public_key_of_key_file(&path), Some(public));
        assert_eq!(parse_public_key(&key.public_key_hex()).unwrap(), public);
    }

    #[test]
    fn a_private_key_file_is_refused_as_public_key_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records-signing.key");
        let key = RecordsKey::load_or_create(&path).unwrap();
        let content = std::fs::read_to_string(&path).unwrap();
        let seed = without_comments(&content);
        let error = parse_public_key(path.to_str().unwrap()).unwrap_err();
        assert!(matches!(error, KeyError::PrivateKeyGiven { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(PASS_THE_PUBLIC_KEY), "{message}");
        assert!(!message.contains(&seed), "{message}");
        // The public key as `courtline records public-key` prints it reads back.
        let printed = format!(
            "{}\n# fingerprint {}\n",
            key.public_key_hex(),
            fingerprint(&key.public_key().to_bytes())
        );
        assert_eq!(
            parse_public_key(&printed).unwrap(),
            key.public_key().to_bytes()
        );
        let public_file = dir.path().join("records-signing.pub");
        std::fs::write(&public_file, &printed).unwrap();
        assert_eq!(
            parse_public_key(public_file.to_str().unwrap()).unwrap(),
            key.public_key().to_bytes()
        );
        // A key file from before the header still loads.
        let legacy = dir.path().join("legacy.key");
        std::fs::write(&legacy, format!("{seed}\n")).unwrap();
        assert_eq!(
            RecordsKey::load(&legacy).unwrap().public_key_hex(),
            key.public_key_hex()
        );
        assert_eq!(
            public_key_of_seed(&parse_32(&seed).unwrap()),
            key.public_key().to_bytes()
        );
    }

    #[test]
    fn malformed_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            RecordsKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        assert!(parse_public_key("zz").is_err());
    }
}
