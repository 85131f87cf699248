//! The switchboard's durable spool: every call event is on disk before it is sent.
//!
//! A spool directory holds:
//!
//! - `node-id` — this switchboard's identity, generated once (or from config);
//! - `acked` — a node sequence number the records service acknowledged, written
//!   before any segment is deleted and otherwise at most about once a second (the
//!   spool task's check), not on every acknowledgement: a file behind the truth
//!   only means a few events sent again after a crash, which the service ignores;
//! - `LOCK` — an advisory lock, so two switchboards never share a spool;
//! - segments `<first seq, 20 digits>.seg`, append-only: an 8-byte magic, then
//!   entries `[length u32 LE][CRC-32 of payload u32 LE][payload]`, the payload a
//!   protobuf `NodeEvent` carrying its node sequence number.
//!
//! Appends are written and `fsync`ed before the events are handed to delivery.
//! A segment is deleted only once every entry in it is acknowledged. On start the
//! segments are read back: entries after `acked` are delivered again (the service
//! ignores ones it already has), and a torn or corrupt tail — a write cut short by
//! a crash or power loss — is truncated at the last good entry, with a warning
//! that says what was discarded. Nothing after a bad entry is ever parsed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use prost::Message;
use tracing::{info, warn};

use crate::contract::pb::NodeEvent;

/// First bytes of every segment: format and version.
const MAGIC: &[u8; 8] = b"CLSPOOL1";
/// Bytes before each payload: length and CRC.
const ENTRY_HEADER: usize = 8;
/// Larger entries are corruption, not events (a full record is well under 4 KiB).
const MAX_ENTRY: usize = 1 << 20;
/// A new segment is started once the active one is this large.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Segment file suffix.
const SEGMENT_SUFFIX: &str = ".seg";

/// Why the spool could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Another process holds the spool.
    #[error("spool {0} is in use by another courtline process (each switchboard needs its own spool_dir)")]
    Locked(PathBuf),
    /// The spool belongs to a different node id than configured.
    #[error(
        "spool {path} belongs to node {stored:?} but [records] node_id is {configured:?}: \
         use the stored id, or a new spool_dir for a new node"
    )]
    NodeMismatch {
        /// The spool directory.
        path: PathBuf,
        /// The id in the spool.
        stored: String,
        /// The id in the configuration.
        configured: String,
    },
    /// The active segment is no longer where the spool is (directory moved, deleted or replaced).
    #[error("spool segment {0} is gone from the spool directory")]
    Vanished(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A torn or corrupt tail found while opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tear {
    /// The segment.
    pub segment: PathBuf,
    /// Offset of the first bad byte (the file now ends here).
    pub offset: u64,
    /// Bytes discarded.
    pub discarded: u64,
    /// Why the entry there is not good.
    pub reason: String,
}

/// What opening a spool found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Events not yet acknowledged, in sequence order, to deliver again.
    pub unacked: Vec<NodeEvent>,
    /// Torn tails that were truncated.
    pub tears: Vec<Tear>,
}

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    /// Its path.
    path: PathBuf,
    /// Sequence number of its first entry (from the name).
    first_seq: u64,
    /// Sequence number of its last entry (0 when empty).
    last_seq: u64,
}

/// An open, locked spool.
#[derive(Debug)]
pub struct Spool {
    /// The spool directory.
    dir: PathBuf,
    /// This switchboard's node id.
    node_id: String,
    /// Held for the spool's lifetime: the advisory lock.
    _lock: File,
    /// Segments in sequence order; the last is the active one.
    segments: Vec<Segment>,
    /// The active segment, open for appending.
    active: File,
    /// Bytes in the active segment.
    active_len: u64,
    /// The next sequence number to assign.
    next_seq: u64,
    /// Highest acknowledged sequence number.
    acked: u64,
    /// The number the `acked` file holds: at most `acked`, and at least the last
    /// entry of every deleted segment (so numbering never restarts below them).
    acked_on_disk: u64,
}

/// Where the `node-id` of a spool is kept.
fn node_id_path(dir: &Path) -> PathBuf {
    dir.join("node-id")
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// A node id for a new spool: host name plus random suffix, unique even on one host.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "switchboard".to_owned());
    format!("{host}-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// Writes `content` to `path` atomically (temp file, fsync, rename, fsync directory).
fn write_atomically(dir: &Path, path: &Path, content: &[u8]) -> Result<(), SpoolError> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(content).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// What reading one segment found.
struct SegmentContent {
    /// The good entries, in order.
    events: Vec<NodeEvent>,
    /// Where the first bad entry starts and why it is bad.
    bad: Option<(u64, String)>,
    /// The file's length.
    total: u64,
}

/// Which of a segment's entries [`read_segment`] decodes and keeps.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// Entries numbered below this are passed over (only their number is decoded).
    from_seq: u64,
    /// Reading stops once this many are kept.
    limit: usize,
}

impl Wanted {
    /// Every entry (opening the spool, inspecting it).
    const ALL: Wanted = Wanted {
        from_seq: 0,
        limit: usize::MAX,
    };
}

/// A spooled `NodeEvent` read for its number alone (tag 2, as in `NodeEvent`):
/// prost skips the other fields without allocating, so reading back from the
/// middle of a segment costs little for the entries before it.
#[derive(Clone, PartialEq, prost::Message)]
struct EntrySeq {
    /// `NodeEvent::node_seq`.
    #[prost(uint64, tag = "2")]
    node_seq: u64,
}

/// Reads a segment's good entries that `wanted` asks for; stops at the first
/// bad one and says where and why.
fn read_segment(path: &Path, wanted: Wanted) -> Result<SegmentContent, SpoolError> {
    let metadata = std::fs::metadata(path).map_err(io_error(path))?;
    if !metadata.is_file() {
        return Ok(SegmentContent {
            events: Vec::new(),
            bad: Some((0, "not a regular file".into())),
            total: 0,
        });
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    let total = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        let reason = if bytes.is_empty() {
            "empty file"
        } else {
            "bad magic"
        };
        return Ok(SegmentContent {
            events: Vec::new(),
            bad: Some((0, reason.into())),
            total,
        });
    }
    let mut events = Vec::new();
    let mut offset = MAGIC.len();
    while offset < bytes.len() {
        let bad = |reason: &str| Some((offset as u64, reason.to_owned()));
        let Some(header) = bytes.get(offset..offset + ENTRY_HEADER) else {
            return Ok(SegmentContent {
                events,
                bad: bad("entry header cut short"),
                total,
            });
        };
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if length > MAX_ENTRY {
            return Ok(SegmentContent {
                events,
                bad: bad("entry length out of range"),
                total,
            });
        }
        let start = offset + ENTRY_HEADER;
        let Some(payload) = bytes.get(start..start + length) else {
            return Ok(SegmentContent {
                events,
                bad: bad("entry cut short"),
                total,
            });
        };
        if crc32fast::hash(payload) != crc {
            return Ok(SegmentContent {
                events,
                bad: bad("CRC mismatch"),
                total,
            });
        }
        if events.len() >= wanted.limit {
            break;
        }
        if wanted.from_seq > 0 {
            match EntrySeq::decode(payload) {
                Ok(entry) if entry.node_seq < wanted.from_seq => {
                    offset = start + length;
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    let bad = bad(&format!("undecodable entry: {error}"));
                    return Ok(SegmentContent { events, bad, total });
                }
            }
        }
        match NodeEvent::decode(payload) {
            Ok(event) => events.push(event),
            Err(error) => {
                let bad = bad(&format!("undecodable entry: {error}"));
                return Ok(SegmentContent { events, bad, total });
            }
        }
        offset = start + length;
    }
    Ok(SegmentContent {
        events,
        bad: None,
        total,
    })
}

/// Every good entry of the spool at `dir`, without changing anything (for inspection
/// and tests; safe while a switchboard is appending).
pub fn read_entries(dir: &Path) -> Result<Vec<NodeEvent>, SpoolError> {
    let mut events = Vec::new();
    for segment in list_segments(dir)? {
        events.extend(read_segment(&segment.path, Wanted::ALL)?.events);
    }
    Ok(events)
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, SpoolError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first_seq) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            segments.push(Segment {
                path: entry.path(),
                first_seq,
                last_seq: 0,
            });
        }
    }
    segments.sort_by_key(|segment| segment.first_seq);
    Ok(segments)
}

fn encode_entry(event: &NodeEvent) -> Vec<u8> {
    let payload = event.encode_to_vec();
    let mut entry = Vec::with_capacity(ENTRY_HEADER + payload.len());
    entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    entry.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    entry.extend_from_slice(&payload);
    entry
}

fn open_segment(path: &Path) -> Result<(File, u64), SpoolError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    let mut length = file.metadata().map_err(io_error(path))?.len();
    if length == 0 {
        file.write_all(MAGIC).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
        length = MAGIC.len() as u64;
    }
    Ok((file, length))
}

impl Spool {
    /// Opens (creating if needed) and locks the spool at `dir`, recovering what is in it.
    /// `node_id`: the configured id, or `None` to use (or generate) the stored one.
    pub fn open(dir: &Path, node_id: Option<&str>) -> Result<(Spool, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if !lock.try_lock_exclusive().map_err(io_error(&lock_path))? {
            return Err(SpoolError::Locked(dir.to_path_buf()));
        }
        let id_path = node_id_path(dir);
        let stored = std::fs::read_to_string(&id_path)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        let node_id = match (stored, node_id.filter(|id| !id.is_empty())) {
            (Some(stored), Some(configured)) if stored != configured => {
                return Err(SpoolError::NodeMismatch {
                    path: dir.to_path_buf(),
                    stored,
                    configured: configured.to_owned(),
                })
            }
            (Some(stored), _) => stored,
            (None, configured) => {
                let id = configured.map_or_else(generated_node_id, str::to_owned);
                write_atomically(dir, &id_path, format!("{id}\n").as_bytes())?;
                info!(node_id = %id, spool = %dir.display(), "new spool");
                id
            }
        };
        let acked = std::fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);

        let mut recovered = Recovered::default();
        let mut segments = list_segments(dir)?;
        let mut highest = acked;
        for segment in &mut segments {
            let SegmentContent { events, bad, total } = read_segment(&segment.path, Wanted::ALL)?;
            if let Some((offset, reason)) = bad {
                let tear = Tear {
                    segment: segment.path.clone(),
                    offset,
                    discarded: total - offset,
                    reason,
                };
                warn!(
                    segment = %tear.segment.display(),
                    offset = tear.offset,
                    discarded_bytes = tear.discarded,
                    reason = %tear.reason,
                    recovered_entries = events.len(),
                    "spool segment has a torn or corrupt tail; truncated at the last good entry"
                );
                let truncated = if offset == 0 {
                    std::fs::remove_file(&segment.path)
                } else {
                    OpenOptions::new()
                        .write(true)
                        .open(&segment.path)
                        .and_then(|file| {
                            file.set_len(offset)?;
                            file.sync_all()
                        })
                };
                truncated.map_err(io_error(&segment.path))?;
                recovered.tears.push(tear);
            }
            segment.last_seq = events.last().map_or(0, |event| event.node_seq);
            highest = highest
                .max(segment.last_seq)
                .max(segment.first_seq.saturating_sub(1));
            recovered
                .unacked
                .extend(events.into_iter().filter(|event| event.node_seq > acked));
        }
        segments.retain(|segment| segment.path.exists());
        let next_seq = highest + 1;
        let active_path = segment_path(dir, next_seq);
        let (active, active_len) = open_segment(&active_path)?;
        if !segments.iter().any(|segment| segment.path == active_path) {
            segments.push(Segment {
                path: active_path,
                first_seq: next_seq,
                last_seq: 0,
            });
        }
        sync_dir(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            node_id,
            _lock: lock,
            segments,
            active,
            active_len,
            next_seq,
            acked,
            acked_on_disk: acked,
        };
        spool.trim()?;
        Ok((spool, recovered))
    }

    /// The sequence number the next assigned event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// This switchboard's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Gives each event the node id and the next sequence numbers.
    pub fn assign(&mut self, events: &mut [NodeEvent]) {
        for event in events {
            event.node_id = self.node_id.clone();
            event.node_seq = self.next_seq;
            self.next_seq += 1;
        }
    }

    /// Appends already numbered events and fsyncs. On failure the segment is cut
    /// back to where it was, so the entries can be written again later.
    pub fn write(&mut self, events: &[NodeEvent]) -> Result<(), SpoolError> {
        if events.is_empty() {
            return Ok(());
        }
        self.check_active(events[0].node_seq)?;
        if self.active_len >= SEGMENT_BYTES {
            self.rotate(events[0].node_seq)?;
        }
        let mut bytes = Vec::new();
        for event in events {
            bytes.extend_from_slice(&encode_entry(event));
        }
        let path = self.active_path();
        let written = self
            .active
            .write_all(&bytes)
            .and_then(|()| self.active.sync_data());
        if let Err(source) = written {
            // Best effort: a partial entry left behind would end recovery early.
            let _ = self.active.set_len(self.active_len);
            return Err(SpoolError::Io { path, source });
        }
        self.active_len += bytes.len() as u64;
        if let Some(segment) = self.segments.last_mut() {
            segment.last_seq = events[events.len() - 1].node_seq;
        }
        Ok(())
    }

    /// Fails if the active segment is no longer in the spool directory (moved,
    /// deleted, replaced): writing on would put events where no restart finds them.
    /// `first_seq` names a segment started as a replacement.
    pub fn check_active(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.active_path();
        let same = match (std::fs::metadata(&path), self.active.metadata()) {
            (Ok(on_disk), Ok(open)) => same_file(&on_disk, &open),
            _ => false,
        };
        if same {
            return Ok(());
        }
        // Start a fresh segment where the spool is; fails while the directory is unusable.
        std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        self.rotate(first_seq)
            .map_err(|_| SpoolError::Vanished(path))
    }

    fn rotate(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, first_seq);
        let (file, length) = open_segment(&path)?;
        sync_dir(&self.dir)?;
        self.active = file;
        self.active_len = length;
        self.segments.retain(|segment| segment.path != path);
        self.segments.push(Segment {
            path,
            first_seq,
            last_seq: 0,
        });
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.segments.last().map_or_else(
            || segment_path(&self.dir, self.next_seq),
            |s| s.path.clone(),
        )
    }

    /// Up to `limit` spooled events from sequence number `from_seq` on, in order:
    /// how delivery reads back what it did not keep in memory.
    pub fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<NodeEvent>, SpoolError> {
        let mut events = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            // A segment ends where the next one starts.
            let ends_before = self
                .segments
                .get(i + 1)
                .is_some_and(|next| next.first_seq <= from_seq);
            if ends_before {
                continue;
            }
            // Decoded as it is read, from `from_seq` and up to the limit:
            // decoding the whole segment to keep some of its events held every
            // event in it (each with its call's record) in memory at once.
            let wanted = Wanted {
                from_seq,
                limit: limit - events.len(),
            };
            events.extend(read_segment(&segment.path, wanted)?.events);
            if events.len() >= limit {
                break;
            }
        }
        Ok(events)
    }

    /// Notes, in memory, that the service has everything up to `seq`. Whether a
    /// segment is now wholly acknowledged: then [`Spool::save_acknowledged`] has
    /// disk work to do (otherwise it can wait for the next periodic save).
    pub fn acknowledge(&mut self, seq: u64) -> bool {
        self.acked = self.acked.max(seq);
        let active = self.active_path();
        self.segments
            .iter()
            .any(|segment| segment.path != active && segment.last_seq <= self.acked)
    }

    /// Writes the acknowledged number to the `acked` file (two fsyncs, so not
    /// on every acknowledgement) if it moved, then deletes the segments whose
    /// entries are all acknowledged.
    pub fn save_acknowledged(&mut self) -> Result<(), SpoolError> {
        if self.acked > self.acked_on_disk {
            write_atomically(
                &self.dir,
                &self.dir.join("acked"),
                format!("{}\n", self.acked).as_bytes(),
            )?;
            self.acked_on_disk = self.acked;
        }
        self.trim()
    }

    /// Deletes segments wholly acknowledged by the `acked` file: the file is
    /// written first, so after a crash numbering resumes above every deleted entry.
    fn trim(&mut self) -> Result<(), SpoolError> {
        let active = self.active_path();
        let acked = self.acked_on_disk;
        let mut removed = false;
        for segment in &self.segments {
            if segment.path != active && segment.last_seq <= acked {
                match std::fs::remove_file(&segment.path) {
                    Ok(()) => removed = true,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(&segment.path)(error)),
                }
            }
        }
        self.segments
            .retain(|segment| segment.path == active || segment.last_seq > acked);
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::pb::node_event::Kind;
    use crate::contract::pb::{CallMilestone, CallRecord, NodeStarted};

    fn events(n: usize) -> Vec<NodeEvent> {
        (0..n)
            .map(|_| NodeEvent {
                at_ms: 1,
                kind: Some(Kind::NodeStarted(NodeStarted {
                    version: "t".into(),
                })),
                ..NodeEvent::default()
            })
            .collect()
    }

    fn append(spool: &mut Spool, n: usize) -> Vec<NodeEvent> {
        let mut batch = events(n);
        spool.assign(&mut batch);
        spool.write(&batch).unwrap();
        batch
    }

    fn seqs(events: &[NodeEvent]) -> Vec<u64> {
        events.iter().map(|e| e.node_seq).collect()
    }

    #[test]
    fn an_acknowledgement_is_written_before_its_segment_goes_and_otherwise_when_saved() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        append(&mut spool, 3);
        assert!(
            !spool.acknowledge(2),
            "nothing to delete in the active segment"
        );
        drop(spool);
        // Not saved: after a restart those events are sent again (the service
        // ignores what it has), and numbering goes on above them.
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(seqs(&recovered.unacked), vec![1, 2, 3]);
        assert_eq!(seqs(&append(&mut spool, 1)), vec![4]);
        // 1-3 are no longer in the active segment: it can go once 3 is written down.
        assert!(spool.acknowledge(3));
        spool.save_acknowledged().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("acked")).unwrap(),
            "3\n"
        );
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        drop(spool);
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(seqs(&recovered.unacked), vec![4]);
        assert_eq!(seqs(&append(&mut spool, 1)), vec![5]);
    }

    #[test]
    fn entries_survive_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert!(recovered.unacked.is_empty());
        let node = spool.node_id().to_owned();
        append(&mut spool, 3);
        spool.acknowledge(1);
        spool.save_acknowledged().unwrap();
        drop(spool);
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(spool.node_id(), node);
        assert_eq!(seqs(&recovered.unacked), vec![2, 3]);
        assert!(recovered.unacked.iter().all(|e| e.node_id == node));
        // Numbering continues after what was written.
        assert_eq!(seqs(&append(&mut spool, 1)), vec![4]);
        spool.acknowledge(4);
        spool.save_acknowledged().unwrap();
        drop(spool);
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert!(recovered.unacked.is_empty());
        // Fully acknowledged segments are gone; numbering still continues.
        assert_eq!(seqs(&append(&mut spool, 1)), vec![5]);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn an_entry_is_numbered_without_decoding_its_event() {
        let event = NodeEvent {
            node_id: "node-a".into(),
            node_seq: 123_456_789,
            at_ms: 1_700_000_000_000,
            call_id: "call-1".into(),
            kind: Some(Kind::Milestone(CallMilestone {
                operator_uri: "sip:desk@example.org".into(),
                snapshot: Some(CallRecord {
                    call_id: "call-1".into(),
                    caller_number: "13800138000".into(),
                    ..CallRecord::default()
                }),
                ..CallMilestone::default()
            })),
        };
        let entry = EntrySeq::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(entry.node_seq, 123_456_789);
    }

    #[test]
    fn read_from_crosses_segments_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        append(&mut spool, 3);
        spool.rotate(4).unwrap();
        append(&mut spool, 3);
        spool.rotate(7).unwrap();
        append(&mut spool, 2);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 3);
        assert_eq!(seqs(&spool.read_from(5, 10).unwrap()), vec![5, 6, 7, 8]);
        assert_eq!(seqs(&spool.read_from(2, 3).unwrap()), vec![2, 3, 4]);
        assert_eq!(seqs(&spool.read_from(4, 1).unwrap()), vec![4]);
        assert!(spool.read_from(9, 5).unwrap().is_empty());
        assert!(spool.read_from(1, 0).unwrap().is_empty());
    }

    #[test]
    fn a_second_process_cannot_take_the_spool_and_node_ids_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), Some("sb-1")).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), Some("sb-1")),
            Err(SpoolError::Locked(_))
        ));
        drop(spool);
        assert!(matches!(
            Spool::open(dir.path(), Some("sb-2")),
            Err(SpoolError::NodeMismatch { .. })
        ));
        assert_eq!(Spool::open(dir.path(), None).unwrap().0.node_id(), "sb-1");
    }

    #[test]
    fn torn_tail_is_truncated_and_nothing_after_it_is_invented() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        append(&mut spool, 3);
        let path = spool.active_path();
        drop(spool);
        let length = std::fs::metadata(&path).unwrap().len();
        // Cut the last entry in half, as a crash mid-write would.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length - 5).unwrap();
        drop(file);
        let (mut spool, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(seqs(&recovered.unacked), vec![1, 2]);
        assert_eq!(recovered.tears.len(), 1);
        assert_eq!(recovered.tears[0].reason, "entry cut short");
        // The torn entry's number is reused: it was never sent.
        assert_eq!(seqs(&append(&mut spool, 1)), vec![3]);
        drop(spool);
        let (_, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(seqs(&recovered.unacked), vec![1, 2, 3]);
        assert!(recovered.tears.is_empty());
    }

    #[test]
    fn corrupt_crc_ends_recovery_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        append(&mut spool, 2);
        let path = spool.active_path();
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (_, recovered) = Spool::open(dir.path(), None).unwrap();
        assert_eq!(seqs(&recovered.unacked), vec![1]);
        assert_eq!(recovered.tears[0].reason, "CRC mismatch");
    }

    #[cfg(unix)]
    #[test]
    fn a_full_disk_fails_the_write_and_the_entries_can_be_written_later() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), None).unwrap();
        append(&mut spool, 1);
        // The active segment now lives on a device that is always full (ENOSPC).
        let path = spool.active_path();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(full, &path).unwrap();
        spool.active = OpenOptions::new().append(true).open(full).unwrap();
        let mut batch = events(1);
        spool.assign(&mut batch);
        let error = spool.write(&batch).unwrap_err();
        assert!(error.to_string().contains("No space left"), "{error}");
        // Space again: the same entries are written to a fresh segment.
        std::fs::remove_file(&path).unwrap();
        spool.write(&batch).unwrap();
        assert_eq!(seqs(&read_entries(dir.path()).unwrap()), vec![2]);
    }

    #[test]
    fn a_vanished_spool_directory_is_an_error_until_it_is_back() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("spool");
        let (mut spool, _) = Spool::open(&dir, None).unwrap();
        append(&mut spool, 1);
        let moved = parent.path().join("moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::write(&dir, "not a directory").unwrap();
        let mut batch = events(1);
        spool.assign(&mut batch);
        assert!(spool.write(&batch).is_err());
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&moved, &dir).unwrap();
        spool.write(&batch).unwrap();
        assert_eq!(seqs(&read_entries(&dir).unwrap()), vec![1, 2]);
    }
}
