//! Spare files for call recordings, so a recorded call does not create (and
//! the records service then delete) an inode of its own (#16).
//!
//! Creating a file on a journal-less ext4 scans past every inode freed in the
//! last 30 s; with `on_report` deleting nearly every recording, that was a
//! fifth of courtline's CPU at 150 calls/s, growing with the rate. So the
//! writer keeps its files in `<dir>/.spare/<n>` and gives each recording a
//! second name, `<dir>/<call id>.wav` (a hard link: no new inode). Whoever
//! decides the recording's fate — the records service moving it into the
//! evidence store or deleting it, the upload deleting its copy — works on the
//! `.wav` name as before. Once the pool's name is the file's only name
//! (link count 1), nobody else can reach it: it is truncated (the deleted
//! audio is gone) and reused. A file still named elsewhere after
//! [`PoolLimits::lent_for`] is the recording's alone: the pool drops its name.
//!
//! [`SparePool`] decides (sans-IO); [`SpareFiles`] carries it out on files.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an emptied spare keeps: at most the length of a recording's WAV
/// header, never audio (samples start at byte 44). Truncating to zero would
/// make ext4 (`auto_da_alloc`) allocate and write the deleted audio's delayed
/// blocks when the file is closed, so every recording reached the disk even
/// though nearly all are deleted moments after their call (#16); cut to a
/// non-zero length, the page cache drops them unwritten.
pub const KEPT_BYTES: u64 = 44;

/// The pool's folder inside the recordings' temporary area. Not a `.wav`
/// name, so nothing that looks for recordings takes a spare for one.
pub const SPARE_DIR: &str = ".spare";

/// How large the pool may grow, and how long it waits for a file's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Emptied files kept ready: beyond this a reclaimed file is deleted.
    pub spares: usize,
    /// Closed recordings whose fate the pool waits for: beyond this the
    /// oldest is dropped from the pool (its recording is untouched).
    pub lent: usize,
    /// How long a closed recording may stay named elsewhere before the pool
    /// drops it (kept, or waiting for a records service that is away).
    pub lent_for: Duration,
    /// Lent files looked at (one `stat` each) per sweep, so a sweep stays
    /// short while a records service is away and thousands wait.
    pub checks_per_sweep: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            spares: 4_096,
            lent: 65_536,
            lent_for: Duration::from_secs(600),
            checks_per_sweep: 4_096,
        }
    }
}

/// Where a new recording's file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// An emptied spare file (at most a header left), `.spare/<id>`.
    Spare(u64),
    /// No spare: a new file, `.spare/<id>`, is to be created.
    Create(u64),
}

/// A closed recording's file the pool waits to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lent {
    /// The pool's id of the file.
    pub id: u64,
    /// When the recording was closed.
    pub since: Instant,
}

/// What to do with a pool file after looking at its link count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Only the pool names it: truncate it; it is a spare now.
    Reuse,
    /// Only the pool names it, and there are spares enough: delete it.
    Remove,
    /// Still named elsewhere (fate undecided, being uploaded, kept): look again later.
    Later,
    /// Named elsewhere for too long: delete the pool's name only; the
    /// recording lives on under its own.
    Release,
    /// The pool's name is gone (removed by hand): forget the id.
    Forget,
}

/// The pool's bookkeeping: which files are spare, which are lent out to
/// closed recordings, and what to do with each. No files, no clock.
#[derive(Debug)]
pub struct SparePool {
    /// Empty files ready for a new recording.
    spares: Vec<u64>,
    /// Closed recordings' files, about oldest first.
    lent: VecDeque<Lent>,
    /// The id a newly created file gets.
    next_id: u64,
    /// Bounds.
    limits: PoolLimits,
}

impl SparePool {
    /// An empty pool.
    pub fn new(limits: PoolLimits) -> SparePool {
        SparePool {
            spares: Vec::new(),
            lent: VecDeque::new(),
            next_id: 1,
            limits,
        }
    }

    /// Bounds and timing.
    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// At start-up, file `id` was found in the pool with `links` names: a
    /// spare (or a deleted recording) is reused, a file named elsewhere too
    /// (a recording the previous run left to the records service, or
    /// one it was writing when it stopped) is left to its own name.
    pub fn found(&mut self, id: u64, links: u64) -> Verdict {
        self.next_id = self.next_id.max(id.saturating_add(1));
        self.sole_name(id, links)
    }

    /// A file for a new recording.
    pub fn take(&mut self) -> Take {
        match self.spares.pop() {
            Some(id) => Take::Spare(id),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                Take::Create(id)
            }
        }
    }

    /// A file taken could not be used (created or linked): it is not the
    /// pool's any more (the caller removed it).
    pub fn lost(&mut self, id: u64) {
        self.spares.retain(|&spare| spare != id);
        self.lent.retain(|lent| lent.id != id);
    }

    /// The recording in file `id` was closed at `now` (or failed): its fate
    /// is someone else's now. Returns a file to [`Verdict::Release`] when
    /// the pool already waits for as many as it may.
    pub fn lend(&mut self, id: u64, now: Instant) -> Option<u64> {
        self.lent.push_back(Lent { id, since: now });
        if self.lent.len() > self.limits.lent {
            self.lent.pop_front().map(|lent| lent.id)
        } else {
            None
        }
    }

    /// The next lent file to look at, if any; hand it back with [`SparePool::checked`].
    pub fn due(&mut self) -> Option<Lent> {
        self.lent.pop_front()
    }

    /// Lent file `lent` has `links` names now (0: the pool's is gone too).
    pub fn checked(&mut self, lent: Lent, links: u64, now: Instant) -> Verdict {
        match links {
            0 => Verdict::Forget,
            1 => self.sole_name(lent.id, links),
            _ if now.saturating_duration_since(lent.since) >= self.limits.lent_for => {
                Verdict::Release
            }
            _ => {
                self.lent.push_back(lent);
                Verdict::Later
            }
        }
    }

    /// Truncating a file to reuse it failed: it is removed instead.
    pub fn not_reused(&mut self, id: u64) {
        self.spares.retain(|&spare| spare != id);
    }

    /// Spare files ready.
    #[cfg(test)]
    pub fn spares(&self) -> usize {
        self.spares.len()
    }

    /// Closed recordings waited for.
    pub fn lent(&self) -> usize {
        self.lent.len()
    }

    /// File `id` has `links` names, the pool's among them.
    fn sole_name(&mut self, id: u64, links: u64) -> Verdict {
        if links > 1 {
            Verdict::Release
        } else if links == 0 {
            Verdict::Forget
        } else if self.spares.len() < self.limits.spares {
            self.spares.push(id);
            Verdict::Reuse
        } else {
            Verdict::Remove
        }
    }
}

/// Whether `error` (from [`SpareFiles::take`]) says the file system cannot
/// give a file a second name: then recordings are created one by one.
pub fn links_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::EXDEV | libc::EMLINK)
    )
}

/// The pool on disk: `<dir>/.spare/`, locked by this process for its life
/// (two switchboards sharing a directory must not write one file twice).
#[derive(Debug)]
pub struct SpareFiles {
    /// `<dir>/.spare`.
    dir: PathBuf,
    /// The decisions.
    pool: SparePool,
    /// The open pool folder, `flock`ed while this process runs.
    _lock: File,
}

impl SpareFiles {
    /// Opens (creating it) and locks the pool in `recordings`, and sorts out
    /// what a previous run left there.
    pub fn open(recordings: &Path, limits: PoolLimits) -> io::Result<SpareFiles> {
        let dir = recordings.join(SPARE_DIR);
        std::fs::create_dir_all(&dir)?;
        let lock = File::open(&dir)?;
        // SAFETY: flock on a descriptor this function owns; no memory involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "{} is in use by another process ({error}); give each switchboard its own [recording] dir",
                    dir.display()
                ),
            ));
        }
        let mut files = SpareFiles {
            dir,
            pool: SparePool::new(limits),
            _lock: lock,
        };
        for entry in std::fs::read_dir(&files.dir)? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let links = entry.metadata()?.nlink();
            let verdict = files.pool.found(id, links);
            files.carry_out(id, verdict);
        }
        Ok(files)
    }

    /// The pool's name of file `id`.
    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// A file named `recording` (and, in the pool, by its id), empty or with
    /// at most [`KEPT_BYTES`] of an earlier header left, open
    /// for reading and writing. A spare gone from the folder (removed by
    /// hand) is skipped; [`links_unsupported`] tells a file system without
    /// hard links from other errors.
    pub fn take(&mut self, recording: &Path) -> io::Result<(File, u64)> {
        let mut made_again = false;
        let (file, id) = loop {
            let (id, create) = match self.pool.take() {
                Take::Spare(id) => (id, false),
                Take::Create(id) => (id, true),
            };
            let spare = self.path(id);
            let open = || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(create)
                    .open(&spare)
            };
            match open() {
                Ok(file) => break (file, id),
                Err(error) if error.kind() == io::ErrorKind::NotFound && !made_again => {
                    self.pool.lost(id);
                    if create {
                        // The temporary area was removed under the writer: made again.
                        std::fs::create_dir_all(&self.dir)?;
                        made_again = true;
                    }
                }
                Err(error) => {
                    self.pool.lost(id);
                    return Err(error);
                }
            }
        };
        let spare = self.path(id);
        let linked = match std::fs::hard_link(&spare, recording) {
            // A leftover of the same name (a call id cannot repeat; a restore
            // could): replaced, as creating the file would.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(recording).and_then(|()| std::fs::hard_link(&spare, recording))
            }
            linked => linked,
        };
        if let Err(error) = linked {
            self.pool.lost(id);
            let _ = std::fs::remove_file(&spare);
            return Err(error);
        }
        Ok((file, id))
    }

    /// File `id`'s recording was closed (or given up) at `now`.
    pub fn give_back(&mut self, id: u64, now: Instant) {
        if let Some(oldest) = self.pool.lend(id, now) {
            self.carry_out(oldest, Verdict::Release);
        }
    }

    /// Looks at closed recordings' files (each at most once) and empties
    /// those only the pool names, for reuse: a deleted recording's audio is
    /// gone within a sweep of its deletion.
    pub fn reclaim(&mut self, now: Instant) {
        let checks = self.pool.lent().min(self.pool.limits().checks_per_sweep);
        for _ in 0..checks {
            let Some(lent) = self.pool.due() else { return };
            let links = match std::fs::symlink_metadata(self.path(lent.id)) {
                Ok(meta) => meta.nlink(),
                Err(_) => 0,
            };
            let verdict = self.pool.checked(lent, links, now);
            self.carry_out(lent.id, verdict);
        }
    }

    /// Spare files ready and closed recordings waited for.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.pool.spares(), self.pool.lent())
    }

    /// Does what `verdict` says with file `id`.
    fn carry_out(&mut self, id: u64, verdict: Verdict) {
        let path = self.path(id);
        match verdict {
            Verdict::Reuse => {
                let emptied = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|file| {
                        let length = file.metadata()?.len();
                        file.set_len(length.min(KEPT_BYTES))
                    });
                if let Err(error) = emptied {
                    tracing::warn!(file = %path.display(), %error, "cannot empty a spare recording file; deleting it");
                    self.pool.not_reused(id);
                    let _ = std::fs::remove_file(&path);
                }
            }
            Verdict::Remove | Verdict::Release => {
                if let Err(error) = std::fs::remove_file(&path) {
                    if error.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), %error, "cannot remove a spare recording file");
                    }
                }
            }
            Verdict::Later | Verdict::Forget => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PoolLimits {
        PoolLimits {
            spares: 2,
            lent: 3,
            lent_for: Duration::from_secs(60),
            checks_per_sweep: 4,
        }
    }

    #[test]
    fn a_deleted_recording_becomes_the_next_calls_file() {
        let mut pool = SparePool::new(limits());
        let t0 = Instant::now();
        assert_eq!(pool.take(), Take::Create(1));
        assert_eq!(pool.lend(1, t0), None);
        let lent = pool.due().unwrap();
        // The records service deleted the recording's own name.
        assert_eq!(pool.checked(lent, 1, t0), Verdict::Reuse);
        assert_eq!(pool.take(), Take::Spare(1));
        assert_eq!(pool.take(), Take::Create(2));
    }

    #[test]
    fn a_file_still_named_elsewhere_is_never_reused() {
        let mut pool = SparePool::new(limits());
        let t0 = Instant::now();
        pool.take();
        pool.lend(1, t0);
        // Fate undecided (or being uploaded): looked at again later, not reused.
        let lent = pool.due().unwrap();
        assert_eq!(
            pool.checked(lent, 2, t0 + Duration::from_secs(59)),
            Verdict::Later
        );
        assert_eq!(pool.take(), Take::Create(2));
        // Still named elsewhere after lent_for (kept in the evidence store):
        // the pool lets go of it, and never hands it out.
        let lent = pool.due().unwrap();
        assert_eq!(
            pool.checked(lent, 2, t0 + Duration::from_secs(60)),
            Verdict::Release
        );
        assert_eq!(pool.due(), None);
        assert_eq!(pool.take(), Take::Create(3));
    }

    #[test]
    fn the_pool_keeps_at_most_its_spares_and_waits_for_at_most_its_lent() {
        let mut pool = SparePool::new(limits());
        let t0 = Instant::now();
        for id in 1..=3 {
            assert_eq!(pool.take(), Take::Create(id));
            assert_eq!(pool.lend(id, t0), None);
        }
        // A fourth closed recording: the oldest waited for is let go.
        pool.take();
        assert_eq!(pool.lend(4, t0), Some(1));
        let mut verdicts = Vec::new();
        while let Some(lent) = pool.due() {
            verdicts.push(pool.checked(lent, 1, t0));
        }
        assert_eq!(
            verdicts,
            vec![Verdict::Reuse, Verdict::Reuse, Verdict::Remove]
        );
        assert_eq!((pool.spares(), pool.lent()), (2, 0));
    }

    #[test]
    fn leftovers_at_start_up_are_reused_or_left_to_their_recording() {
        let mut pool = SparePool::new(limits());
        // A spare, a recording the previous run left with the records service, another spare.
        assert_eq!(pool.found(7, 1), Verdict::Reuse);
        assert_eq!(pool.found(9, 2), Verdict::Release);
        assert_eq!(pool.found(3, 1), Verdict::Reuse);
        assert_eq!(pool.found(4, 1), Verdict::Remove);
        // New files never take an id in use.
        assert_eq!(pool.take(), Take::Spare(3));
        assert_eq!(pool.take(), Take::Spare(7));
        assert_eq!(pool.take(), Take::Create(10));
    }

    #[test]
    fn a_lost_file_leaves_the_pool() {
        let mut pool = SparePool::new(limits());
        let t0 = Instant::now();
        pool.take();
        pool.lend(1, t0);
        let lent = pool.due().unwrap();
        assert_eq!(pool.checked(lent, 0, t0), Verdict::Forget);
        assert_eq!(pool.take(), Take::Create(2));
        pool.lost(2);
        assert_eq!((pool.spares(), pool.lent()), (0, 0));
    }

    #[test]
    fn files_come_back_only_when_the_recording_name_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut files = SpareFiles::open(dir.path(), limits()).unwrap();
        let first = dir.path().join("a.wav");
        let (mut file, id) = files.take(&first).unwrap();
        // A recording: its header, then audio.
        let call_a = [[b'h'; KEPT_BYTES as usize].as_slice(), &[b'a'; 4_000]].concat();
        std::io::Write::write_all(&mut file, &call_a).unwrap();
        drop(file);
        files.give_back(id, t0);
        // Kept (still named a.wav): the next call gets a new file.
        let (_, other) = files.take(&dir.path().join("b.wav")).unwrap();
        assert_ne!(other, id);
        files.reclaim(t0);
        assert_eq!(std::fs::read(&first).unwrap(), call_a);
        // Deleted by the records service: its audio cut off at the next
        // sweep (the header's bytes stay), then reused under the new name.
        std::fs::remove_file(&first).unwrap();
        files.reclaim(t0);
        assert_eq!(
            std::fs::read(files.path(id)).unwrap(),
            &call_a[..KEPT_BYTES as usize]
        );
        let third = dir.path().join("c.wav");
        let (_, reused) = files.take(&third).unwrap();
        assert_eq!(reused, id);
        assert_eq!(std::fs::metadata(&third).unwrap().len(), KEPT_BYTES);
        assert_eq!(std::fs::metadata(&third).unwrap().nlink(), 2);
    }

    #[test]
    fn a_spare_removed_by_hand_is_skipped_and_a_removed_folder_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut files = SpareFiles::open(dir.path(), limits()).unwrap();
        let (_, id) = files.take(&dir.path().join("a.wav")).unwrap();
        std::fs::remove_file(dir.path().join("a.wav")).unwrap();
        files.give_back(id, t0);
        files.reclaim(t0);
        assert_eq!(files.counts(), (1, 0));
        std::fs::remove_dir_all(dir.path().join(SPARE_DIR)).unwrap();
        let (_, new) = files.take(&dir.path().join("b.wav")).unwrap();
        assert_ne!(new, id);
        assert!(dir.path().join("b.wav").exists());
    }

    #[test]
    fn a_restart_reuses_spares_and_leaves_recordings_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let kept = dir.path().join("kept.wav");
        let deleted = dir.path().join("deleted.wav");
        let audio = [[b'h'; KEPT_BYTES as usize].as_slice(), b"audio"].concat();
        {
            let mut files = SpareFiles::open(dir.path(), limits()).unwrap();
            for path in [&kept, &deleted] {
                let (mut file, id) = files.take(path).unwrap();
                std::io::Write::write_all(&mut file, &audio).unwrap();
                files.give_back(id, t0);
            }
            // Another process cannot use the same pool meanwhile.
            assert!(SpareFiles::open(dir.path(), limits()).is_err());
        }
        std::fs::remove_file(&deleted).unwrap();
        let files = SpareFiles::open(dir.path(), limits()).unwrap();
        assert_eq!(files.counts(), (1, 0));
        // The kept recording is whole and named only by itself now.
        assert_eq!(std::fs::read(&kept).unwrap(), audio);
        assert_eq!(std::fs::metadata(&kept).unwrap().nlink(), 1);
        let spare = std::fs::read_dir(dir.path().join(SPARE_DIR))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        // The deleted recording's audio is gone; at most its header's bytes stay.
        assert_eq!(spare.metadata().unwrap().len(), KEPT_BYTES);
    }
}
