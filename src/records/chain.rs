//! The hash chain: how each stored event is bound to the one before it.
//!
//! The chain is **global** — one sequence for every event the records service
//! stores (call events from all switchboards and lines, flags, accesses,
//! checkpoints, purges, token changes). One chain gives one total order that a
//! checkpoint signs in a single signature and that `verify` walks in one pass;
//! per-line chains would let writers run in parallel, but the store serialises
//! writes anyway and access events belong to no line.
//!
//! `hash = H(prev_hash ‖ kind ‖ node_id ‖ node_seq ‖ call_id ‖ at_ms ‖ stored_at_ms ‖ H(body))`,
//! each field length-prefixed. The body enters through its digest so that a purge
//! past retention can drop the body and keep the chain verifiable. The chain
//! position (`seq`) is deliberately *not* hashed: order is what the `prev_hash`
//! links say, so a row moved to another position is recognised as moved
//! (re-ordered), not merely as changed.

use sha2::Digest;

/// Length of every chain hash (SHA-256 and SM3 are both 256-bit).
pub const HASH_LEN: usize = 32;

/// A chain hash.
pub type Hash = [u8; HASH_LEN];

/// The `prev_hash` of the first event.
pub const GENESIS_PREV: Hash = [0; HASH_LEN];

/// The kind name of a switchboard's applied configuration (start-up or reload):
/// the ledger stores it, `records config-history` lists it.
pub const CONFIG_APPLIED: &str = "config_applied";

/// Which hash function the chain uses; fixed by the chain's first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256 (FIPS 180-4), the default.
    #[default]
    Sha256,
    /// SM3 (GB/T 32905-2016), for deployments that must use Chinese national algorithms.
    Sm3,
}

impl HashAlgorithm {
    /// The name stored in the chain and written in config files.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sm3 => "sm3",
        }
    }

    /// Parses a stored or configured name.
    pub fn from_name(name: &str) -> Option<HashAlgorithm> {
        match name {
            "sha256" => Some(HashAlgorithm::Sha256),
            "sm3" => Some(HashAlgorithm::Sm3),
            _ => None,
        }
    }

    /// Hashes `parts` as one message.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Hash {
        match self {
            HashAlgorithm::Sha256 => finish(sha2::Sha256::new(), parts),
            HashAlgorithm::Sm3 => finish(sm3::Sm3::new(), parts),
        }
    }

    /// Hashes one byte string.
    pub fn digest(self, bytes: &[u8]) -> Hash {
        self.digest_parts(&[bytes])
    }
}

fn finish<D: Digest>(mut hasher: D, parts: &[&[u8]]) -> Hash {
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0; HASH_LEN];
    out.copy_from_slice(&hasher.finalize()[..HASH_LEN]);
    out
}

/// The hashed fields of one stored event besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// Event kind name (see [`crate::records::ledger::kind_of`]).
    pub kind: String,
    /// Reporting switchboard, for switchboard events.
    pub node_id: Option<String>,
    /// The switchboard's sequence number, for switchboard events.
    pub node_seq: Option<i64>,
    /// The call the event belongs to.
    pub call_id: Option<String>,
    /// When it happened.
    pub at_ms: i64,
    /// When the service stored it.
    pub stored_at_ms: i64,
}

/// `H(prev ‖ header ‖ body_digest)`, every variable-length field length-prefixed so
/// that no two different headers hash the same bytes.
pub fn event_hash(
    algorithm: HashAlgorithm,
    prev: &[u8],
    header: &EventHeader,
    body_digest: &[u8],
) -> Hash {
    let mut message = Vec::with_capacity(160);
    let mut field = |bytes: &[u8]| {
        message.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        message.extend_from_slice(bytes);
    };
    field(prev);
    field(header.kind.as_bytes());
    field(header.node_id.as_deref().unwrap_or("").as_bytes());
    field(&header.node_seq.unwrap_or(-1).to_be_bytes());
    field(header.call_id.as_deref().unwrap_or("").as_bytes());
    field(&header.at_ms.to_be_bytes());
    field(&header.stored_at_ms.to_be_bytes());
    field(body_digest);
    algorithm.digest(&message)
}

/// One event as stored: chain position, header, body (absent once purged), hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Chain position.
    pub seq: i64,
    /// Hashed fields.
    pub header: EventHeader,
    /// Protobuf `EventBody`; `None` after a purge.
    pub body: Option<Vec<u8>>,
    /// Hash of the body as stored.
    pub body_digest: Vec<u8>,
    /// The previous event's hash.
    pub prev_hash: Vec<u8>,
    /// This event's hash.
    pub hash: Vec<u8>,
}

impl StoredEvent {
    /// Whether `hash` is what header, body digest and `prev_hash` give, and the body (if
    /// still there) matches its digest.
    pub fn is_self_consistent(&self, algorithm: HashAlgorithm) -> bool {
        let body_ok = self
            .body
            .as_ref()
            .is_none_or(|body| algorithm.digest(body).as_slice() == self.body_digest.as_slice());
        body_ok
            && event_hash(algorithm, &self.prev_hash, &self.header, &self.body_digest).as_slice()
                == self.hash.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 180-4 and GB/T 32905 test vectors for "abc".
        assert_eq!(
            hex::encode(HashAlgorithm::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(HashAlgorithm::Sm3.digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            HashAlgorithm::Sha256.digest_parts(&[b"a", b"bc"]),
            HashAlgorithm::Sha256.digest(b"abc")
        );
    }

    #[test]
    fn every_header_field_changes_the_hash() {
        let header = EventHeader {
            kind: "ended".into(),
            node_id: Some("n1".into()),
            node_seq: Some(7),
            call_id: Some("c".into()),
            at_ms: 5,
            stored_at_ms: 6,
        };
        let base = event_hash(HashAlgorithm::Sha256, &GENESIS_PREV, &header, b"d");
        let variants = [
            EventHeader {
                kind: "endedx".into(),
                ..header.clone()
            },
            EventHeader {
                node_id: None,
                ..header.clone()
            },
            EventHeader {
                node_seq: Some(8),
                ..header.clone()
            },
            EventHeader {
                call_id: None,
                ..header.clone()
            },
            EventHeader {
                at_ms: 4,
                ..header.clone()
            },
            EventHeader {
                stored_at_ms: 7,
                ..header.clone()
            },
        ];
        for variant in variants {
            assert_ne!(
                event_hash(HashAlgorithm::Sha256, &GENESIS_PREV, &variant, b"d"),
                base
            );
        }
        assert_ne!(
            event_hash(HashAlgorithm::Sha256, &[1; 32], &header, b"d"),
            base
        );
        assert_ne!(
            event_hash(HashAlgorithm::Sha256, &GENESIS_PREV, &header, b"e"),
            base
        );
        assert_ne!(
            event_hash(HashAlgorithm::Sm3, &GENESIS_PREV, &header, b"d"),
            base
        );
    }
}
