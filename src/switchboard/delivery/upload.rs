//! Uploads of kept call recordings to a records service on another machine.
//!
//! An embedded records service takes a recording over from the path in its
//! `RecordingFinished` event; a remote one cannot reach that path, so the
//! switchboard sends the file (`UploadRecording`). Each recording waiting to be
//! sent has a marker, `<spool>/uploads/<call id>.json`, written and fsync'd before
//! the call's recording event is queued, so a restart finds it again. The file
//! stays in the recording directory until the service confirms it holds exactly
//! these bytes (or says it keeps none of them): only then are the file and its
//! marker deleted. Failures are retried with back-off, as event delivery does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::endpoints::{AfterFailure, EndpointChoice, RecordsEndpoints};
use crate::contract::connect::{connect, error_chain, RecordsClient};
use crate::contract::digest::sha256_and_length;
use crate::contract::pb::{
    upload_recording_request, RecordingFinished, RecordingUpload, UploadRecordingRequest,
};

/// First retry delay after a failed upload.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between retries, so a recovered service is noticed within 30 s.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes per upload message (well under gRPC's 4 MiB message limit).
const CHUNK: usize = 256 * 1024;
/// Messages read ahead of the network.
const READ_AHEAD: usize = 4;
/// How long an upload may take: this, plus a second per MiB.
const BASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A recording waiting to be uploaded: what its marker file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Waiting {
    /// The call.
    call_id: String,
    /// The WAV file in the recording directory.
    path: PathBuf,
    /// SHA-256 (hex) of the file as closed, as its event says.
    sha256: String,
    /// Its length.
    bytes: u64,
    /// 8000 or 16000.
    sample_rate: u32,
    /// 2.
    channels: u32,
    /// "wav".
    format: String,
}

/// Hands kept recordings to the upload task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// Where the markers are.
    dir: PathBuf,
    /// Into the upload task.
    queue: mpsc::UnboundedSender<Waiting>,
}

/// What the upload task did; returned at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Recordings the service stored (local copies deleted).
    pub uploaded: u64,
    /// Recordings the service keeps none of (local copies deleted).
    pub discarded: u64,
    /// Recordings still waiting at shutdown: their markers stay for the next start.
    pub waiting: u64,
}

/// Handle on the upload task; call [`UploadDelivery::finish`] at shutdown.
#[derive(Debug)]
pub struct UploadDelivery {
    /// Tells the task to stop.
    stop: oneshot::Sender<()>,
    /// The task.
    task: JoinHandle<UploadStats>,
}

impl UploadDelivery {
    /// Stops uploading (an upload under way is abandoned: it is sent again after the
    /// next start) and returns what was done.
    pub async fn finish(self) -> UploadStats {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(stats) => stats,
            Err(join) => {
                error!(error = %join, "recording upload task failed; recordings stay on disk");
                UploadStats::default()
            }
        }
    }
}

impl Uploads {
    /// Starts the upload task (inside a Tokio runtime) with the markers in `dir`; the
    /// recordings a previous run left waiting go first.
    pub fn spawn(
        dir: PathBuf,
        endpoints: impl Into<RecordsEndpoints>,
    ) -> io::Result<(Uploads, UploadDelivery)> {
        let endpoints = endpoints.into();
        std::fs::create_dir_all(&dir)?;
        let waiting = scan(&dir)?;
        if !waiting.is_empty() {
            info!(recordings = waiting.len(), dir = %dir.display(), "uploading recordings left waiting by the previous run");
        }
        let (queue, incoming) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(
            UploadTask {
                dir: dir.clone(),
                choice: EndpointChoice::new(endpoints.each().len()),
                endpoints,
                client: None,
                waiting: waiting.into(),
                incoming,
                stats: UploadStats::default(),
            }
            .run(stopped),
        );
        Ok((Uploads { dir, queue }, UploadDelivery { stop, task }))
    }

    /// Marks call `call_id`'s finished `recording` as waiting for upload (on disk,
    /// before its event is queued) and hands it to the upload task.
    pub async fn hold(&self, call_id: &str, recording: &RecordingFinished) {
        let waiting = Waiting {
            call_id: call_id.to_owned(),
            path: PathBuf::from(&recording.path),
            sha256: recording.sha256.clone(),
            bytes: recording.bytes,
            sample_rate: recording.sample_rate,
            channels: recording.channels,
            format: recording.format.clone(),
        };
        let marker = marker_path(&self.dir, call_id);
        let to_write = waiting.clone();
        let written = tokio::task::spawn_blocking(move || write_marker(&marker, &to_write)).await;
        if let Some(error) = match written {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(join) => Some(join.to_string()),
        } {
            error!(call_id, %error, "cannot mark the recording as waiting for upload: it is sent from memory, and not after a restart");
        }
        if self.queue.send(waiting).is_err() {
            error!(
                call_id,
                "recording uploads have shut down: the recording stays on disk until the next start"
            );
        }
    }
}

/// The marker of call `call_id`'s waiting recording.
fn marker_path(dir: &Path, call_id: &str) -> PathBuf {
    dir.join(format!("{call_id}.json"))
}

/// Writes `waiting`'s marker durably (temporary file, fsync, rename, directory fsync).
fn write_marker(path: &Path, waiting: &Waiting) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec(waiting).map_err(io::Error::other)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The recordings whose markers are in `dir`, oldest call id first (ids are time-ordered).
fn scan(dir: &Path) -> io::Result<Vec<Waiting>> {
    let mut waiting = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|error| error.to_string())
            .and_then(|text| serde_json::from_slice(&text).map_err(|error| error.to_string()))
        {
            Ok(marker) => waiting.push(marker),
            Err(error) => {
                warn!(marker = %path.display(), %error, "unreadable upload marker left alone")
            }
        }
    }
    waiting.sort_by(|a: &Waiting, b| a.call_id.cmp(&b.call_id));
    Ok(waiting)
}

/// The length and SHA-256 (hex) of the file at `path`.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    sha256_and_length(std::fs::File::open(path)?)
}

/// Sends the declaration, then the file in chunks, into `sender` (a blocking thread).
fn read_upload(
    waiting: Waiting,
    mut file: std::fs::File,
    sender: &mpsc::Sender<UploadRecordingRequest>,
) {
    let message = |item| UploadRecordingRequest { item: Some(item) };
    let declaration = RecordingUpload {
        call_id: waiting.call_id.clone(),
        sha256: waiting.sha256.clone(),
        bytes: waiting.bytes,
        sample_rate: waiting.sample_rate,
        channels: waiting.channels,
        format: waiting.format.clone(),
    };
    if sender
        .blocking_send(message(upload_recording_request::Item::Recording(
            declaration,
        )))
        .is_err()
    {
        return;
    }
    let mut buffer = vec![0; CHUNK];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => {
                let chunk = upload_recording_request::Item::Chunk(buffer[..read].to_vec());
                if sender.blocking_send(message(chunk)).is_err() {
                    return;
                }
            }
            Err(error) => {
                // Ending short makes the service refuse the upload; it is tried again.
                warn!(call_id = %waiting.call_id, %error, "reading a recording for upload failed midway");
                return;
            }
        }
    }
}

/// What one upload attempt came to.
enum Outcome {
    /// Done with: uploaded, or not wanted; file and marker are gone.
    Done,
    /// Worth trying again later (why).
    Retry(String),
    /// Trying again cannot help; the file stays for someone to look at (why).
    GiveUp(String),
}

/// Uploads waiting recordings one at a time, retrying with back-off.
struct UploadTask {
    /// Where the markers are.
    dir: PathBuf,
    /// How to reach each records service.
    endpoints: RecordsEndpoints,
    /// Which one is in use.
    choice: EndpointChoice,
    /// The connection once made (to the one in use).
    client: Option<RecordsClient>,
    /// Recordings to upload, in order.
    waiting: VecDeque<Waiting>,
    /// New recordings from [`Uploads::hold`].
    incoming: mpsc::UnboundedReceiver<Waiting>,
    /// Counters.
    stats: UploadStats,
}

impl UploadTask {
    /// Uploads until `stop` says so (or every [`Uploads`] is gone and nothing waits).
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> UploadStats {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            if self.waiting.is_empty() {
                tokio::select! {
                    next = self.incoming.recv() => match next {
                        Some(waiting) => self.waiting.push_back(waiting),
                        None => break,
                    },
                    _ = &mut stop => break,
                }
            }
            while let Ok(waiting) = self.incoming.try_recv() {
                self.waiting.push_back(waiting);
            }
            let Some(waiting) = self.waiting.pop_front() else {
                continue;
            };
            let outcome = tokio::select! {
                outcome = self.attempt(&waiting) => outcome,
                _ = &mut stop => {
                    self.waiting.push_front(waiting);
                    break;
                }
            };
            match outcome {
                Outcome::Done => {
                    self.choice.succeeded();
                    backoff = INITIAL_BACKOFF;
                }
                Outcome::GiveUp(why) => {
                    error!(call_id = %waiting.call_id, file = %waiting.path.display(), %why, "recording not uploaded; the file stays where it is");
                }
                Outcome::Retry(why) => {
                    let endpoint = self.endpoint().to_owned();
                    self.client = None;
                    if self.choice.failed() == AfterFailure::TryNext {
                        warn!(call_id = %waiting.call_id, %endpoint, %why, "cannot upload a recording there; trying the next records service");
                        self.waiting.push_front(waiting);
                        continue;
                    }
                    // Half fixed, half random: spreads retries without ever waiting long.
                    let delay = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    warn!(call_id = %waiting.call_id, %endpoint, %why, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "cannot upload a recording yet; it stays on disk, will retry");
                    self.waiting.push_back(waiting);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = &mut stop => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        while let Ok(waiting) = self.incoming.try_recv() {
            self.waiting.push_back(waiting);
        }
        self.stats.waiting = self.waiting.len() as u64;
        self.stats
    }

    /// The records service in use, for logs.
    fn endpoint(&self) -> &str {
        self.endpoints
            .get(self.choice.current())
            .map_or("", |options| options.endpoint.as_str())
    }

    /// One upload of `waiting`, with what follows from the answer.
    async fn attempt(&mut self, waiting: &Waiting) -> Outcome {
        let path = waiting.path.clone();
        let local = tokio::task::spawn_blocking(move || hash_file(&path)).await;
        match local {
            Ok(Ok((bytes, sha256)))
                if bytes == waiting.bytes && sha256.eq_ignore_ascii_case(&waiting.sha256) => {}
            Ok(Ok((bytes, sha256))) => {
                return Outcome::GiveUp(format!(
                    "the file is {bytes} bytes with SHA-256 {sha256}, but was closed as {} bytes with SHA-256 {}: it changed on disk",
                    waiting.bytes, waiting.sha256
                ))
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::NotFound => {
                warn!(call_id = %waiting.call_id, file = %waiting.path.display(), "a recording waiting for upload is gone (deleted after an upload cut short by a restart?); forgetting it");
                self.forget(waiting).await;
                return Outcome::Done;
            }
            Ok(Err(error)) => return Outcome::Retry(format!("cannot read the file: {error}")),
            Err(join) => return Outcome::Retry(join.to_string()),
        }
        let file = match std::fs::File::open(&waiting.path) {
            Ok(file) => file,
            Err(error) => return Outcome::Retry(format!("cannot open the file: {error}")),
        };
        if self.client.is_none() {
            let Some(options) = self.endpoints.get(self.choice.current()) else {
                return Outcome::Retry("no records endpoint configured".into());
            };
            match connect(options).await {
                Ok(client) => self.client = Some(client),
                Err(error) => return Outcome::Retry(error.to_string()),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Outcome::Retry("not connected".into());
        };
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        let reading = waiting.clone();
        tokio::task::spawn_blocking(move || read_upload(reading, file, &sender));
        let timeout = BASE_TIMEOUT + Duration::from_secs(waiting.bytes >> 20);
        let answer = tokio::time::timeout(
            timeout,
            client.upload_recording(tokio_stream::wrappers::ReceiverStream::new(receiver)),
        )
        .await;
        let response = match answer {
            Err(_) => {
                self.client = None;
                return Outcome::Retry(format!("no answer within {timeout:?}"));
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                return Outcome::GiveUp(status.message().to_owned())
            }
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) {
                    // Start over with a fresh connection: the old one may be half dead.
                    self.client = None;
                }
                return Outcome::Retry(format!("{}: {}", status.code(), error_chain(&status)));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        match response.state.as_str() {
            "stored" if response.sha256.eq_ignore_ascii_case(&waiting.sha256) => {
                info!(call_id = %waiting.call_id, bytes = waiting.bytes, seq = response.seq, "recording uploaded; local copy deleted");
                self.stats.uploaded += 1;
                self.discard(waiting).await
            }
            "stored" => Outcome::GiveUp(format!(
                "the records service holds SHA-256 {}, not this file's {}",
                response.sha256, waiting.sha256
            )),
            "deleted" => {
                info!(call_id = %waiting.call_id, "the records service keeps no copy of this recording (on_report, no flag or report); deleted");
                self.stats.discarded += 1;
                self.discard(waiting).await
            }
            other => {
                self.forget(waiting).await;
                Outcome::GiveUp(format!(
                    "the records service answered {other:?} ({})",
                    response.detail
                ))
            }
        }
    }

    /// Deletes the recording's file, then its marker.
    async fn discard(&self, waiting: &Waiting) -> Outcome {
        let path = waiting.path.clone();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(error)) = removed {
            warn!(call_id = %waiting.call_id, file = %waiting.path.display(), %error, "cannot delete a recording the records service has");
        }
        self.forget(waiting).await;
        Outcome::Done
    }

    /// Deletes the recording's marker: it no longer waits.
    async fn forget(&self, waiting: &Waiting) {
        let marker = marker_path(&self.dir, &waiting.call_id);
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(marker)).await;
        if let Ok(Err(error)) = removed {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(call_id = %waiting.call_id, %error, "cannot delete an upload marker; the upload is asked again after a restart");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = Waiting {
            call_id: "0190f1c2-0000-7000-8000-000000000002".into(),
            path: "/var/lib/courtline/recordings/x.wav".into(),
            sha256: "ab".repeat(32),
            bytes: 44,
            sample_rate: 8000,
            channels: 2,
            format: "wav".into(),
        };
        let earlier = Waiting {
            call_id: "0190f1c2-0000-7000-8000-000000000001".into(),
            ..waiting.clone()
        };
        write_marker(&marker_path(dir.path(), &waiting.call_id), &waiting).unwrap();
        write_marker(&marker_path(dir.path(), &earlier.call_id), &earlier).unwrap();
        std::fs::write(dir.path().join("stray.tmp"), b"half").unwrap();
        assert_eq!(scan(dir.path()).unwrap(), vec![earlier, waiting]);
    }
}
