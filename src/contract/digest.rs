//! The digest a recording is known by on both sides of the contract: the
//! switchboard takes it when it closes or uploads a file, the records service
//! when it keeps, checks or exports one. One definition, so the two never
//! disagree on what was hashed.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Read in pieces this large: a recording is megabytes, never held whole.
const PIECE: usize = 64 * 1024;

/// The length of everything `reader` yields and its SHA-256, lower-case hex.
pub fn sha256_and_length(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; PIECE];
    let mut length = 0;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok((length, hex::encode(hasher.finalize())));
        }
        length += read as u64;
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2's vectors, one of them longer than a piece.
    #[test]
    fn digests_match_the_reference_vectors() {
        assert_eq!(
            sha256_and_length(&b"abc"[..]).unwrap(),
            (
                3,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            )
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            sha256_and_length(million_a.as_slice()).unwrap(),
            (
                1_000_000,
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0".into()
            )
        );
        assert_eq!(
            sha256_and_length(io::empty()).unwrap(),
            (
                0,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            )
        );
    }
}
