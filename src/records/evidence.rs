//! The evidence store: the call recordings the records service keeps
//! (`[records.service] recordings_dir`, one `<call_id>.wav` per call).
//!
//! [`fate`] decides (sans-IO) what becomes of a finished recording; [`Evidence`]
//! carries it out on files: takes a file over from the switchboard's temporary
//! area (embedded service) or receives it from the switchboard's upload ([`Incoming`],
//! remote service), deletes one nobody asked to keep, checks a stored one against
//! its chained hash and length, and removes one a purge has dropped.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use prost::Message;

use super::chain::StoredEvent;
use super::store::{RecordingRow, RecordingState};
use crate::contract::digest::sha256_and_length;
use crate::contract::pb::event_body::Kind;
use crate::contract::pb::node_event::Kind as NodeKind;
use crate::contract::pb::{CallRecording, EventBody, RecordingFinished, RecordingStored};

/// Why a recording a remote records service is told about is not stored yet.
pub const NOT_TRANSFERRED: &str =
    "not transferred yet: the remote records service waits for the switchboard's upload (UploadRecording)";

/// Why an unreported `on_report` recording a remote service is told about is deleted.
pub const DELETED_BY_SWITCHBOARD: &str =
    "record_audio = \"on_report\" and no flag or report: the switchboard deletes its copy when it offers the upload";

/// What becomes of a finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The switchboard could not record the call; nothing to keep.
    Failed(String),
    /// Into the evidence store.
    Keep,
    /// `on_report` and the call has no flag or report: deleted.
    Delete,
    /// To be kept, but the file is out of this service's reach (remote service):
    /// it waits for the switchboard's upload.
    NotTransferred,
}

impl Fate {
    /// The recording row's state if the fate is carried out as decided.
    pub fn state(&self) -> RecordingState {
        match self {
            Fate::Failed(_) => RecordingState::Failed,
            Fate::Keep => RecordingState::Stored,
            Fate::Delete => RecordingState::Deleted,
            Fate::NotTransferred => RecordingState::NotTransferred,
        }
    }
}

/// Decides what becomes of `recording`: `on_hold` says the call had a flag (or report)
/// when the recording event was chained, `local` that this service can reach the
/// switchboard's files (embedded). A policy other than `on_report` keeps the file:
/// losing evidence is worse than keeping a file too many.
pub fn fate(recording: &RecordingFinished, on_hold: bool, local: bool) -> Fate {
    if !recording.failure.is_empty() {
        return Fate::Failed(recording.failure.clone());
    }
    if recording.policy == "on_report" && !on_hold {
        Fate::Delete
    } else if local {
        Fate::Keep
    } else {
        Fate::NotTransferred
    }
}

/// Whether a row in `state` agrees with the recording event and the flags before it
/// (for `records verify`). A kept recording may still have failed to be taken over
/// (the row says why); a deleted one may have been out of reach.
pub fn state_agrees(recording: &RecordingFinished, on_hold: bool, state: RecordingState) -> bool {
    match fate(recording, on_hold, true) {
        Fate::Failed(_) => state == RecordingState::Failed,
        Fate::Delete => matches!(
            state,
            RecordingState::Deleted | RecordingState::NotTransferred
        ),
        Fate::Keep | Fate::NotTransferred => state != RecordingState::Deleted,
    }
}

/// A call's chained upload of its recording (a remote service's RecordingStored), if any.
pub fn chained_upload(events: &[StoredEvent]) -> Option<(i64, RecordingStored)> {
    events.iter().find_map(|event| {
        let body = EventBody::decode(event.body.as_deref()?).ok()?;
        match body.kind {
            Some(Kind::RecordingStored(stored)) => Some((event.seq, stored)),
            _ => None,
        }
    })
}

/// A call's chained recording event (unless purged) and whether a flag or a report was
/// chained before it.
pub fn chained_recording(events: &[StoredEvent]) -> Option<(i64, RecordingFinished, bool)> {
    let mut on_hold = false;
    for event in events {
        let body = event
            .body
            .as_deref()
            .and_then(|b| EventBody::decode(b).ok())?;
        match body.kind {
            Some(Kind::Flagged(_) | Kind::Report(_)) => on_hold = true,
            Some(Kind::NodeEvent(node)) => {
                if let Some(NodeKind::Recording(recording)) = node.kind {
                    return Some((event.seq, recording, on_hold));
                }
            }
            _ => {}
        }
    }
    None
}

/// How a call's recording is described to clients: the row's state, and the hash,
/// length and layout as chained (`chained`, when the event is still there).
pub fn describe(row: &RecordingRow, chained: Option<(i64, RecordingFinished)>) -> CallRecording {
    let mut described = CallRecording {
        state: row.state.name().to_owned(),
        detail: row.detail.clone(),
        sha256: row.sha256.clone(),
        bytes: u64::try_from(row.bytes).unwrap_or_default(),
        sample_rate: u32::try_from(row.sample_rate).unwrap_or_default(),
        channels: u32::try_from(row.channels).unwrap_or_default(),
        duration_ms: u32::try_from(row.duration_ms).unwrap_or_default(),
        seq: u64::try_from(row.last_seq).unwrap_or_default(),
    };
    if let Some((seq, recording)) = chained {
        described.sha256 = recording.sha256;
        described.bytes = recording.bytes;
        described.sample_rate = recording.sample_rate;
        described.channels = recording.channels;
        described.duration_ms = recording.duration_ms;
        described.seq = u64::try_from(seq).unwrap_or_default();
    }
    described
}

/// What is wrong with a stored recording's file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// No file.
    #[error("its file {0} is missing")]
    Missing(PathBuf),
    /// Not as long as chained.
    #[error("its file {path} is {actual} bytes long, the chain says {chained}")]
    Length {
        /// The file.
        path: PathBuf,
        /// Its length.
        actual: u64,
        /// The chained length.
        chained: u64,
    },
    /// Different bytes.
    #[error("its file {path} has SHA-256 {actual}, the chain says {chained}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The chained hash.
        chained: String,
    },
    /// It could not be read.
    #[error("its file {path} cannot be read: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// How the partial file of an upload in progress ends.
const PARTIAL_UPLOAD: &str = ".upload";

/// Why an uploaded recording was refused; nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum UploadProblem {
    /// More bytes arrived than were declared.
    #[error("more than the declared {declared} bytes arrived")]
    TooLong {
        /// The declared (and chained) length.
        declared: u64,
    },
    /// The upload ended short.
    #[error("{received} bytes arrived, {declared} were declared")]
    Short {
        /// Bytes received.
        received: u64,
        /// The declared (and chained) length.
        declared: u64,
    },
    /// The bytes are not the recording as chained.
    #[error("the bytes received have SHA-256 {received}, the recording event says {declared}: refused, nothing kept")]
    Hash {
        /// Hash of what arrived.
        received: String,
        /// The declared (and chained) hash.
        declared: String,
    },
    /// The evidence store could not write it.
    #[error("the evidence store cannot write it: {0}")]
    Io(#[from] io::Error),
}

/// A recording being received into the store: written to a partial file of its own,
/// hashed on the way, and put in place only when complete and matching its chained
/// hash. Dropped unfinished, it removes its partial file.
#[derive(Debug)]
pub struct Incoming {
    /// The partial file.
    partial: PathBuf,
    /// Where the finished file goes.
    target: PathBuf,
    /// Open for writing while bytes arrive.
    file: Option<File>,
    /// Hash of the bytes so far.
    hasher: Sha256,
    /// Bytes so far.
    received: u64,
    /// The declared (and chained) length.
    bytes: u64,
    /// The declared (and chained) SHA-256, hex.
    sha256: String,
}

impl Incoming {
    /// Appends `chunk`; refuses bytes beyond the declared length.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), UploadProblem> {
        self.received += chunk.len() as u64;
        if self.received > self.bytes {
            return Err(UploadProblem::TooLong {
                declared: self.bytes,
            });
        }
        self.hasher.update(chunk);
        match self.file.as_mut() {
            Some(file) => Ok(file.write_all(chunk)?),
            None => Err(UploadProblem::Io(io::Error::other(
                "the upload is finished",
            ))),
        }
    }

    /// Checks length and hash, syncs the file and puts it in place.
    pub fn finish(mut self) -> Result<(), UploadProblem> {
        if self.received != self.bytes {
            return Err(UploadProblem::Short {
                received: self.received,
                declared: self.bytes,
            });
        }
        let received = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if !received.eq_ignore_ascii_case(&self.sha256) {
            return Err(UploadProblem::Hash {
                received,
                declared: self.sha256.clone(),
            });
        }
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        std::fs::rename(&self.partial, &self.target)?;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Gone already once finished; otherwise nothing partial may stay.
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The evidence store's directory, and whether this service takes files over.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// Where kept recordings live.
    dir: PathBuf,
    /// The switchboard's files are on this machine (embedded service).
    local: bool,
}

impl Evidence {
    /// The store in `dir`; `local` when the switchboard's files can be reached.
    pub fn new(dir: PathBuf, local: bool) -> Evidence {
        Evidence { dir, local }
    }

    /// Whether the switchboard's files can be reached.
    pub fn local(&self) -> bool {
        self.local
    }

    /// Where call `call_id`'s kept recording is.
    pub fn path(&self, call_id: &str) -> PathBuf {
        self.dir.join(format!("{call_id}.wav"))
    }

    /// Moves `source` into the store as `call_id`'s recording, once its bytes are
    /// the chained ones (`sha256`, `bytes`) and on disk: the switchboard does not
    /// fsync an `on_report` recording, which is nearly always deleted moments
    /// after its close, so the keeper does (rename, or copy across file systems,
    /// then the directory). Idempotent: a file already stored with the chained
    /// length counts as taken over (a retried ingest after a failed commit).
    pub fn take_over(
        &self,
        call_id: &str,
        source: &Path,
        sha256: &str,
        bytes: u64,
    ) -> io::Result<()> {
        let target = self.path(call_id);
        if same_file(source, &target) {
            return Ok(());
        }
        if std::fs::metadata(&target).is_ok_and(|meta| meta.len() == bytes) {
            discard(source)?;
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut from = check_file(source, sha256, bytes).map_err(|problem| match problem {
            FileProblem::Missing(_) => io::Error::new(io::ErrorKind::NotFound, problem),
            FileProblem::Hash { .. } => io::Error::other(format!(
                "{problem}: it changed after the switchboard closed it, or the machine \
                 stopped before it reached the disk"
            )),
            problem => io::Error::other(problem),
        })?;
        from.sync_all()?;
        match std::fs::rename(source, &target) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EXDEV) => {
                let partial = self.dir.join(format!("{call_id}.wav.partial"));
                {
                    from.rewind()?;
                    let mut to = File::create(&partial)?;
                    io::copy(&mut from, &mut to)?;
                    to.flush()?;
                    to.sync_all()?;
                }
                std::fs::rename(&partial, &target)?;
                sync_dir(&self.dir)?;
                std::fs::remove_file(source)?;
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        sync_dir(&self.dir)
    }

    /// Starts receiving call `call_id`'s recording, declared as `bytes` long with
    /// SHA-256 `sha256` (the chained values).
    pub fn incoming(&self, call_id: &str, sha256: &str, bytes: u64) -> io::Result<Incoming> {
        std::fs::create_dir_all(&self.dir)?;
        // Its own name: a retried upload may overlap one still running.
        let partial = self.dir.join(format!(
            ".{call_id}.{}{PARTIAL_UPLOAD}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let file = File::create(&partial)?;
        Ok(Incoming {
            partial,
            target: self.path(call_id),
            file: Some(file),
            hasher: Sha256::new(),
            received: 0,
            bytes,
            sha256: sha256.to_owned(),
        })
    }

    /// Whether `path` (a file the switchboard wrote) lies in the store itself: a
    /// switchboard on this machine whose recording directory is the store.
    pub fn contains(&self, path: &Path) -> bool {
        let parent = path.parent().and_then(|parent| parent.canonicalize().ok());
        parent.is_some() && parent == self.dir.canonicalize().ok()
    }

    /// Removes the partial files of uploads a stopped service left (none can be
    /// running yet); returns how many.
    pub fn remove_partial_uploads(&self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            entries => entries?,
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(PARTIAL_UPLOAD))
            {
                discard(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks call `call_id`'s stored file against its chained hash and length.
    pub fn check(&self, call_id: &str, sha256: &str, bytes: u64) -> Result<(), FileProblem> {
        check_file(&self.path(call_id), sha256, bytes).map(drop)
    }

    /// Removes call `call_id`'s stored recording (purge); gone already is fine.
    pub fn remove(&self, call_id: &str) -> io::Result<()> {
        discard(&self.path(call_id))
    }
}

/// Checks the file at `path` against a chained hash and length; returns it open.
fn check_file(path: &Path, sha256: &str, bytes: u64) -> Result<File, FileProblem> {
    let unreadable = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            FileProblem::Missing(path.to_owned())
        } else {
            FileProblem::Unreadable {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let actual = file.metadata().map_err(unreadable)?.len();
    if actual != bytes {
        return Err(FileProblem::Length {
            path: path.to_owned(),
            actual,
            chained: bytes,
        });
    }
    let (_, actual) = sha256_and_length(&mut file).map_err(unreadable)?;
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(FileProblem::Hash {
            path: path.to_owned(),
            actual,
            chained: sha256.to_owned(),
        });
    }
    Ok(file)
}

/// Deletes `path`; a file that is gone already (a retried ingest) is fine.
pub fn discard(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Whether `a` and `b` name one existing file (a temporary area that is the store).
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(policy: &str, failure: &str) -> RecordingFinished {
        RecordingFinished {
            policy: policy.into(),
            failure: failure.into(),
            ..RecordingFinished::default()
        }
    }

    #[test]
    fn on_report_keeps_only_held_calls() {
        assert_eq!(fate(&recording("on_report", ""), false, true), Fate::Delete);
        assert_eq!(fate(&recording("on_report", ""), true, true), Fate::Keep);
        assert_eq!(fate(&recording("always", ""), false, true), Fate::Keep);
        assert_eq!(
            fate(&recording("always", "disk full"), true, true),
            Fate::Failed("disk full".into())
        );
        assert_eq!(
            fate(&recording("always", ""), true, false),
            Fate::NotTransferred
        );
        // A remote service knows as well which recordings nobody asked to keep.
        assert_eq!(
            fate(&recording("on_report", ""), false, false),
            Fate::Delete
        );
    }

    #[test]
    fn uploads_are_kept_only_whole_and_matching() {
        let temp = tempfile::tempdir().unwrap();
        let evidence = Evidence::new(temp.path().join("store"), false);
        let id = "6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61";
        let bytes = b"RIFF....WAVEdata";
        let sha = hex::encode(Sha256::digest(bytes));
        let leftovers = || {
            std::fs::read_dir(temp.path().join("store"))
                .unwrap()
                .count()
        };

        let mut changed = evidence.incoming(id, &sha, 16).unwrap();
        changed.write(b"RIFF....WAVEdatA").unwrap();
        assert!(matches!(changed.finish(), Err(UploadProblem::Hash { .. })));
        let mut long = evidence.incoming(id, &sha, 16).unwrap();
        assert!(matches!(
            long.write(b"RIFF....WAVEdata!"),
            Err(UploadProblem::TooLong { declared: 16 })
        ));
        drop(long);
        let mut short = evidence.incoming(id, &sha, 16).unwrap();
        short.write(&bytes[..8]).unwrap();
        assert!(matches!(short.finish(), Err(UploadProblem::Short { .. })));
        assert_eq!(leftovers(), 0, "nothing partial is kept");
        // What a service stopped mid-upload leaves is cleared at the next start.
        let interrupted = evidence.incoming(id, &sha, 16).unwrap();
        std::mem::forget(interrupted);
        assert_eq!(leftovers(), 1);
        assert_eq!(evidence.remove_partial_uploads().unwrap(), 1);
        assert_eq!(leftovers(), 0);

        let mut whole = evidence.incoming(id, &sha, 16).unwrap();
        whole.write(&bytes[..8]).unwrap();
        whole.write(&bytes[8..]).unwrap();
        whole.finish().unwrap();
        evidence.check(id, &sha, 16).unwrap();
        assert_eq!(leftovers(), 1);
    }

    #[test]
    fn verify_accepts_only_states_the_events_allow() {
        let unheld = recording("on_report", "");
        assert!(state_agrees(&unheld, false, RecordingState::Deleted));
        assert!(!state_agrees(&unheld, false, RecordingState::Stored));
        assert!(!state_agrees(&unheld, true, RecordingState::Deleted));
        assert!(!state_agrees(
            &recording("always", "x"),
            true,
            RecordingState::Stored
        ));
    }

    #[test]
    fn a_file_is_not_taken_over_unless_its_bytes_are_the_chained_ones() {
        let temp = tempfile::tempdir().unwrap();
        let source = temp.path().join("spool.wav");
        // What a machine that stopped before the pages reached the disk may leave.
        std::fs::write(&source, [0u8; 12]).unwrap();
        let evidence = Evidence::new(temp.path().join("store"), true);
        let id = "0b7c2f4e-1d3a-4e5b-8c6d-9a0b1c2d3e4f";
        let chained = hex::encode(Sha256::digest(b"RIFF....WAVE"));
        let refused = evidence.take_over(id, &source, &chained, 12).unwrap_err();
        assert!(refused.to_string().contains(&chained), "{refused}");
        assert!(
            refused.to_string().contains("reached the disk"),
            "{refused}"
        );
        assert!(source.exists(), "the switchboard's file stays as it was");
        assert!(!evidence.path(id).exists(), "nothing is stored");
        let short = evidence.take_over(id, &source, &chained, 13).unwrap_err();
        assert!(short.to_string().contains("12 bytes long"), "{short}");
    }

    #[test]
    fn files_are_taken_over_once_and_checked() {
        let temp = tempfile::tempdir().unwrap();
        let source = temp.path().join("spool.wav");
        std::fs::write(&source, b"RIFF....WAVE").unwrap();
        let evidence = Evidence::new(temp.path().join("store"), true);
        let id = "6f1c2a9e-3b7d-4c1e-9a55-0d2f4e8b7c61";
        let sha = hex::encode(Sha256::digest(b"RIFF....WAVE"));
        evidence.take_over(id, &source, &sha, 12).unwrap();
        assert!(!source.exists());
        // A retried ingest finds the file stored already.
        evidence.take_over(id, &source, &sha, 12).unwrap();
        evidence.check(id, &sha, 12).unwrap();
        assert!(matches!(
            evidence.check(id, &sha, 13),
            Err(FileProblem::Length { .. })
        ));
        std::fs::write(evidence.path(id), b"RIFF....WAVF").unwrap();
        assert!(matches!(
            evidence.check(id, &sha, 12),
            Err(FileProblem::Hash { .. })
        ));
        evidence.remove(id).unwrap();
        assert!(matches!(
            evidence.check(id, &sha, 12),
            Err(FileProblem::Missing(_))
        ));
    }
}
