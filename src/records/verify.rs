//! `courtline records verify`: recompute the chain and say exactly what is wrong.
//!
//! Four checks, each streaming through the store in pages (memory grows with the
//! number of problems, not the number of events):
//!
//! 1. **Chain.** Every event must hash to its stored hash (else *modified*) and
//!    link to the event stored before it. A broken link is explained by looking
//!    up, in a second pass, where the hashes it points to actually are: a row
//!    whose true neighbours sit elsewhere was *re-ordered*; a row nobody links to
//!    while the chain skips over it was *inserted*; a link pointing at a hash no
//!    row has means the row in between was *deleted* (or, with no gap in the
//!    positions, *modified* with its hash recomputed). Event bodies may be absent
//!    only before a purge event, and never for a flagged call (legal hold).
//! 2. **Checkpoints.** Each must carry a valid Ed25519 signature by a trusted key
//!    over a hash the chain still contains — so even a chain rewritten with
//!    recomputed hashes fails at the first checkpoint it passes.
//! 3. **Call rows.** Every call's row must equal what its events produce
//!    ([`super::ledger::call_effect`]); a row without events was inserted, events
//!    without a row mean the row was deleted.
//! 4. **Reports.** Every report's row must be what its last chained version makes
//!    it ([`ReportRow::of`]), and `report_versions` must list exactly its versions
//!    where the chain has them.
//! 5. **Sequence gaps** in each switchboard's node sequence numbers.
//! 6. **Recordings.** Every call's recording row must agree with its chained
//!    recording event (and the flags and reports before it, and the upload a remote
//!    service chained after it, which makes the row `stored`); every stored recording's
//!    file must be in the evidence store with its chained length and SHA-256
//!    (finding kind `recording`).
//! 7. **Search marks.** Each call's `has_report` and `has_recording` columns (which
//!    the calls search filters on) must agree with the reports and recordings rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;

use super::chain::{HashAlgorithm, StoredEvent, GENESIS_PREV};
use super::evidence::{chained_recording, chained_upload, state_agrees, Evidence};
use super::ledger::signing::checkpoint_signature_valid;
use super::ledger::{apply_effect, call_effect, report_effect};
use super::store::{RecordingRow, RecordingState, ReportRow, Store, StoreError};
use crate::contract::pb::event_body::Kind;
use crate::contract::pb::{CallRecord, EventBody, Finding, RecordingFinished, VerifyResponse};
use crate::contract::row::record_fields;

/// Events or rows read per query.
const PAGE: u32 = 5000;
/// Findings listed in one report; the rest are counted.
const MAX_FINDINGS: usize = 1000;

/// One event's place in the chain, kept only for events next to a problem.
#[derive(Debug, Clone)]
struct Suspect {
    /// Chain position.
    seq: i64,
    /// Event kind and call, for the report.
    label: String,
    /// Its stored `prev_hash` and `hash`.
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    /// Whether its hash matches its content.
    self_ok: bool,
    /// The event stored before it, and whether `prev_hash` points at that event.
    pred_seq: Option<i64>,
    pred_link_ok: bool,
    /// The event stored after it, and whether that event points back at this one.
    succ_seq: Option<i64>,
    succ_link_ok: bool,
}

impl Suspect {
    fn is_suspect(&self) -> bool {
        !self.self_ok || !self.pred_link_ok || !self.succ_link_ok
    }
}

/// A checkpoint read in pass 1.
#[derive(Debug)]
struct SeenCheckpoint {
    /// Where the checkpoint event is.
    seq: i64,
    /// The hash it signs.
    covers_hash: Vec<u8>,
    /// Whether the hash is at the position it names (else looked up in pass 2).
    in_place: bool,
}

/// Collects findings up to [`MAX_FINDINGS`].
#[derive(Debug, Default)]
struct Report {
    /// What goes out.
    response: VerifyResponse,
}

impl Report {
    fn add(&mut self, kind: &str, seq: i64, call_id: &str, detail: String) {
        if self.response.findings.len() >= MAX_FINDINGS {
            self.response.findings_omitted += 1;
            return;
        }
        self.response.findings.push(Finding {
            kind: kind.to_owned(),
            seq: u64::try_from(seq).unwrap_or_default(),
            call_id: call_id.to_owned(),
            detail,
        });
    }
}

fn label(event: &StoredEvent) -> String {
    match &event.header.call_id {
        Some(call_id) => format!("{} event of call {call_id}", event.header.kind),
        None => format!("{} event", event.header.kind),
    }
}

/// Verifies everything in `store` (and the recordings in `evidence`); checkpoint
/// signatures count only by a key in `trusted`.
pub async fn verify(
    store: &dyn Store,
    trusted: &[[u8; 32]],
    evidence: Option<&Evidence>,
) -> Result<VerifyResponse, StoreError> {
    verify_counting(store, trusted, evidence, &AtomicU64::new(0)).await
}

/// [`verify`], storing in `checked` how many events it has checked so far (after
/// each page), so someone else can show its progress while it runs.
pub async fn verify_counting(
    store: &dyn Store,
    trusted: &[[u8; 32]],
    evidence: Option<&Evidence>,
    checked: &AtomicU64,
) -> Result<VerifyResponse, StoreError> {
    let mut report = Report::default();
    let algorithm = chain_algorithm(store, &mut report).await?;

    // Pass 1: hashes and links, in stored order.
    let mut suspects: Vec<Suspect> = Vec::new();
    let mut last: Option<Suspect> = None;
    let mut checkpoints: Vec<SeenCheckpoint> = Vec::new();
    let mut bodiless: Vec<(i64, String)> = Vec::new();
    let mut last_purge = 0_i64;
    let mut last_checkpoint = 0_i64;
    let mut reports = ChainedReports::new();
    let mut head = 0_i64;
    let mut after = 0;
    loop {
        let page = store.events_after(after, PAGE).await?;
        let Some(end) = page.last().map(|event| event.seq) else {
            break;
        };
        for event in &page {
            report.response.events_checked += 1;
            head = event.seq;
            let pred_link_ok = match &last {
                Some(previous) => previous.hash == event.prev_hash,
                None => event.prev_hash == GENESIS_PREV,
            };
            if let Some(previous) = last.as_mut() {
                previous.succ_seq = Some(event.seq);
                previous.succ_link_ok = pred_link_ok;
            }
            let pred_seq = last.as_ref().map(|previous| previous.seq);
            let self_ok = event.is_self_consistent(algorithm);
            match event.body.as_deref().map(EventBody::decode) {
                None => bodiless.push((event.seq, label(event))),
                Some(Ok(body)) if report_effect(&body).is_some() => {
                    if let Some(report) = report_effect(&body) {
                        let chained = reports.entry(report.report_id.clone()).or_default();
                        chained.row = Some(ReportRow::of(report, event.seq));
                        chained
                            .versions
                            .push((i64::from(report.version), event.seq));
                    }
                }
                Some(Ok(body)) => match body.kind {
                    Some(Kind::Purged(_)) => last_purge = event.seq,
                    Some(Kind::Checkpoint(checkpoint)) => {
                        last_checkpoint = event.seq;
                        report.response.checkpoints_checked += 1;
                        let covers = i64::try_from(checkpoint.covers_seq).unwrap_or(-1);
                        let in_place = last.as_ref().is_some_and(|previous| {
                            previous.seq == covers && previous.hash == checkpoint.covers_hash
                        });
                        check_signature(&mut report, event.seq, &checkpoint, trusted);
                        checkpoints.push(SeenCheckpoint {
                            seq: event.seq,
                            covers_hash: checkpoint.covers_hash,
                            in_place,
                        });
                    }
                    _ => {}
                },
                // Undecodable bodies also fail their digest: reported as modified below.
                Some(Err(_)) => {}
            }
            let current = Suspect {
                seq: event.seq,
                label: label(event),
                prev_hash: event.prev_hash.clone(),
                hash: event.hash.clone(),
                self_ok,
                pred_seq,
                pred_link_ok,
                succ_seq: None,
                succ_link_ok: true,
            };
            if let Some(previous) = last.replace(current) {
                if previous.is_suspect() {
                    suspects.push(previous);
                }
            }
        }
        after = end;
        checked.store(report.response.events_checked, Ordering::Relaxed);
    }
    if let Some(previous) = last.take() {
        if previous.is_suspect() {
            suspects.push(previous);
        }
    }
    report.response.unsigned_tail = u64::try_from(head - last_checkpoint).unwrap_or_default();

    // Pass 2: where do the hashes that broken links and checkpoints point at live?
    let mut wanted: HashSet<Vec<u8>> = suspects
        .iter()
        .filter(|s| !s.pred_link_ok)
        .map(|s| s.prev_hash.clone())
        .collect();
    wanted.extend(
        checkpoints
            .iter()
            .filter(|c| !c.in_place)
            .map(|c| c.covers_hash.clone()),
    );
    let referenced: HashSet<Vec<u8>> = suspects.iter().map(|s| s.hash.clone()).collect();
    let mut holder: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut referrer: HashMap<Vec<u8>, i64> = HashMap::new();
    if !wanted.is_empty() || !referenced.is_empty() {
        let mut after = 0;
        loop {
            let page = store.events_after(after, PAGE).await?;
            let Some(end) = page.last().map(|event| event.seq) else {
                break;
            };
            for event in &page {
                if wanted.contains(&event.hash) {
                    holder.insert(event.hash.clone(), event.seq);
                }
                if referenced.contains(&event.prev_hash) {
                    referrer.insert(event.prev_hash.clone(), event.seq);
                }
            }
            after = end;
        }
    }
    classify(&mut report, &suspects, &holder, &referrer);
    for checkpoint in checkpoints.iter().filter(|c| !c.in_place) {
        if !holder.contains_key(&checkpoint.covers_hash) {
            report.add(
                "checkpoint",
                checkpoint.seq,
                "",
                format!(
                    "checkpoint #{} signs hash {} which no event has any more: events before it were rewritten",
                    checkpoint.seq,
                    hex::encode(&checkpoint.covers_hash)
                ),
            );
        }
    }
    for (seq, what) in bodiless {
        if seq > last_purge {
            report.add(
                "deleted",
                seq,
                "",
                format!("event #{seq} ({what}) has lost its content, and no purge came after it"),
            );
        }
    }

    let derived = derived_through_head(store, head).await?;
    check_calls(store, &mut report, derived).await?;
    check_reports(store, &mut report, reports).await?;
    check_recordings(store, evidence, &mut report).await?;
    for (call_id, mark) in store.mismatched_call_marks().await? {
        report.add(
            "projection",
            0,
            &call_id,
            format!(
                "call {call_id}'s {mark} column disagrees with its reports and recordings: \
                 searches by it would pass the call over or show it wrongly"
            ),
        );
    }

    let (_, gaps) = store.node_gaps().await?;
    for gap in gaps {
        report.add(
            "gap",
            0,
            "",
            format!(
                "switchboard {} sequence numbers {}..={} never arrived",
                gap.node_id, gap.first, gap.last
            ),
        );
    }
    Ok(report.response)
}

/// The algorithm named by the chain's first event (SHA-256 if that event is unreadable).
async fn chain_algorithm(
    store: &dyn Store,
    report: &mut Report,
) -> Result<HashAlgorithm, StoreError> {
    let first = store.events_after(0, 1).await?;
    let named = first
        .first()
        .and_then(|event| event.body.as_deref())
        .and_then(|body| EventBody::decode(body).ok())
        .and_then(|body| match body.kind {
            Some(Kind::ChainStarted(started)) => HashAlgorithm::from_name(&started.hash_algorithm),
            _ => None,
        });
    match (first.first(), named) {
        (None, _) => Ok(HashAlgorithm::default()),
        (Some(_), Some(algorithm)) => Ok(algorithm),
        (Some(event), None) => {
            report.add(
                "modified",
                event.seq,
                "",
                "the chain's first event does not name its hash algorithm; assuming sha256".into(),
            );
            Ok(HashAlgorithm::default())
        }
    }
}

fn check_signature(
    report: &mut Report,
    seq: i64,
    checkpoint: &crate::contract::pb::Checkpoint,
    trusted: &[[u8; 32]],
) {
    let valid = checkpoint_signature_valid(
        &checkpoint.public_key,
        checkpoint.covers_seq,
        &checkpoint.covers_hash,
        checkpoint.signed_at_ms,
        &checkpoint.signature,
    );
    if !valid {
        report.add(
            "checkpoint",
            seq,
            "",
            format!("checkpoint #{seq}: the signature does not match what it signs"),
        );
    } else if !trusted
        .iter()
        .any(|key| key.as_slice() == checkpoint.public_key.as_slice())
    {
        report.add(
            "checkpoint",
            seq,
            "",
            format!(
                "checkpoint #{seq} is signed by key {}, which is not trusted here",
                hex::encode(&checkpoint.public_key)
            ),
        );
    }
}

/// Turns the suspects of pass 1 into findings, using where pass 2 found their hashes.
fn classify(
    report: &mut Report,
    suspects: &[Suspect],
    holder: &HashMap<Vec<u8>, i64>,
    referrer: &HashMap<Vec<u8>, i64>,
) {
    let by_seq: HashMap<i64, &Suspect> = suspects.iter().map(|s| (s.seq, s)).collect();
    let mut explained: HashSet<i64> = HashSet::new();
    let true_pred = |s: &Suspect| {
        if s.pred_link_ok {
            s.pred_seq
        } else {
            holder.get(&s.prev_hash).copied()
        }
    };
    let true_succ = |s: &Suspect| referrer.get(&s.hash).copied();
    // A row whose both links point elsewhere looks moved; but when both its true
    // neighbours look moved too, it is the fixed middle of two rows swapped around it.
    let looks_moved = |s: &Suspect| {
        s.self_ok
            && !s.pred_link_ok
            && !s.succ_link_ok
            && true_pred(s).is_some()
            && true_succ(s).is_some()
    };
    let candidates: HashSet<i64> = suspects
        .iter()
        .filter(|s| looks_moved(s))
        .map(|s| s.seq)
        .collect();
    let moved = |s: &Suspect| {
        looks_moved(s)
            && !(true_pred(s).is_some_and(|p| candidates.contains(&p))
                && true_succ(s).is_some_and(|n| candidates.contains(&n)))
    };
    for s in suspects {
        let successor = s.succ_seq.and_then(|seq| by_seq.get(&seq).copied());
        let successor_dangles =
            successor.is_some_and(|n| !n.pred_link_ok && true_pred(n).is_none());
        let successor_skips = successor.is_some_and(|n| !n.pred_link_ok && true_pred(n).is_some());
        if !s.self_ok && s.succ_link_ok {
            report.add(
                "modified",
                s.seq,
                &call_of(&s.label),
                format!("event #{} ({}) was changed after it was chained: its content no longer matches its hash", s.seq, s.label),
            );
        } else if moved(s) {
            report.add(
                "reordered",
                s.seq,
                &call_of(&s.label),
                format!(
                    "event #{} ({}) is out of order: in the chain it follows #{}, but it is stored after #{}",
                    s.seq,
                    s.label,
                    true_pred(s).unwrap_or_default(),
                    s.pred_seq.unwrap_or_default()
                ),
            );
        } else if true_succ(s).is_none() && s.succ_seq.is_some() && successor_skips {
            report.add(
                "inserted",
                s.seq,
                &call_of(&s.label),
                format!(
                    "event #{} ({}) was inserted: the chain passes over it, no event links to it",
                    s.seq, s.label
                ),
            );
        } else if true_succ(s).is_none()
            && s.pred_link_ok
            && successor_dangles
            && s.succ_seq == Some(s.seq + 1)
        {
            report.add(
                "modified",
                s.seq,
                &call_of(&s.label),
                format!("event #{} ({}) was replaced, its hash recomputed: the next event still links to the original", s.seq, s.label),
            );
            explained.extend(s.succ_seq);
        } else {
            continue;
        }
        explained.insert(s.seq);
        explained.extend(s.pred_seq);
        explained.extend(s.succ_seq);
    }
    for s in suspects {
        if explained.contains(&s.seq) || s.pred_link_ok || candidates.contains(&s.seq) {
            continue;
        }
        let missing = match s.pred_seq {
            Some(pred) if s.seq > pred + 1 => {
                format!(" (positions {}..={} are gone)", pred + 1, s.seq - 1)
            }
            _ => String::new(),
        };
        if true_pred(s).is_none() {
            report.add(
                "deleted",
                s.seq,
                "",
                format!(
                    "the event before #{} ({}) was deleted: it links to hash {} which no event has{missing}",
                    s.seq,
                    s.label,
                    hex::encode(&s.prev_hash)
                ),
            );
        } else {
            report.add(
                "broken",
                s.seq,
                &call_of(&s.label),
                format!("the chain is broken before event #{} ({})", s.seq, s.label),
            );
        }
        explained.insert(s.seq);
        explained.extend(s.pred_seq);
    }
}

fn call_of(label: &str) -> String {
    label
        .split_once("of call ")
        .map(|(_, call)| call.to_owned())
        .unwrap_or_default()
}

/// What a call's events say its row must be: `Ok(None)` when the call was purged.
/// `Err` names a flagged call whose events were purged anyway.
fn expected_row(events: &[StoredEvent]) -> Result<Option<CallRecord>, String> {
    if events.iter().any(|event| event.body.is_none()) {
        if events
            .iter()
            .any(|event| event.header.kind == "flagged" || event.header.kind == "report")
        {
            return Err("was purged although it is flagged or reported (legal hold)".into());
        }
        return Ok(None);
    }
    let mut row = None;
    for event in events {
        let Some(body) = event
            .body
            .as_deref()
            .and_then(|b| EventBody::decode(b).ok())
        else {
            continue;
        };
        if let Some(effect) = call_effect(&body) {
            row = apply_effect(row, effect);
        }
    }
    Ok(row)
}

/// What in `row` disagrees with the chained `recording` (flagged before it: `on_hold`).
fn recording_differences(
    row: &RecordingRow,
    recording: &RecordingFinished,
    on_hold: bool,
) -> Vec<String> {
    let chained = [
        ("sha256", recording.sha256.clone(), row.sha256.clone()),
        ("bytes", recording.bytes.to_string(), row.bytes.to_string()),
        (
            "sample_rate",
            recording.sample_rate.to_string(),
            row.sample_rate.to_string(),
        ),
        (
            "channels",
            recording.channels.to_string(),
            row.channels.to_string(),
        ),
        (
            "duration_ms",
            recording.duration_ms.to_string(),
            row.duration_ms.to_string(),
        ),
    ];
    let mut differences: Vec<String> = chained
        .into_iter()
        .filter(|(_, want, have)| want != have)
        .map(|(name, want, have)| format!("{name} is {have:?}, its event says {want:?}"))
        .collect();
    if !state_agrees(recording, on_hold, row.state) {
        differences.push(format!(
            "state {} does not follow from policy {:?}, failure {:?} and {}",
            row.state.name(),
            recording.policy,
            recording.failure,
            if on_hold {
                "a flag before it"
            } else {
                "no flag before it"
            }
        ));
    }
    differences
}

/// Check 5: every recording row against its event, every stored file against its hash.
async fn check_recordings(
    store: &dyn Store,
    evidence: Option<&Evidence>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let mut after = String::new();
    loop {
        let page = store.recordings_after(&after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.call_id.clone();
        for row in &page {
            let call_id = &row.call_id;
            let events = store.call_events(call_id).await?;
            let Some((seq, recording, on_hold)) = chained_recording(&events) else {
                report.add(
                    "projection",
                    row.last_seq,
                    call_id,
                    format!("call {call_id} has a recording row but no chained recording event: the row was inserted"),
                );
                continue;
            };
            let mut differences = recording_differences(row, &recording, on_hold);
            if let Some((stored_seq, stored)) = chained_upload(&events) {
                if row.state != RecordingState::Stored {
                    differences.push(format!(
                        "state {} but event #{stored_seq} stored the switchboard's upload",
                        row.state.name()
                    ));
                }
                if !stored.sha256.eq_ignore_ascii_case(&recording.sha256) {
                    differences.push(format!(
                        "event #{stored_seq} stored an upload with SHA-256 {}, the recording event says {}",
                        stored.sha256, recording.sha256
                    ));
                }
            }
            if !differences.is_empty() {
                report.add(
                    "projection",
                    seq,
                    call_id,
                    format!(
                        "call {call_id}'s recording row was modified: {}",
                        differences.join("; ")
                    ),
                );
            }
            if row.state != RecordingState::Stored {
                continue;
            }
            if let Some(evidence) = evidence {
                let checked = evidence.check(call_id, &recording.sha256, recording.bytes);
                if let Err(problem) = checked {
                    report.add(
                        "recording",
                        seq,
                        call_id,
                        format!("call {call_id}'s recording: {problem}"),
                    );
                }
            }
        }
    }
}

/// How long verify waits for a shared database's follower to write the derived tables
/// up to the head it checked.
const DERIVED_WAIT: Duration = Duration::from_secs(10);

/// The chain position the derived tables hold, once they hold `head` or after
/// [`DERIVED_WAIT`]: in a shared database the follower writes a call's row a moment
/// after its events are chained (a lone service's appends write both at once).
async fn derived_through_head(store: &dyn Store, head: i64) -> Result<i64, StoreError> {
    let deadline = std::time::Instant::now() + DERIVED_WAIT;
    loop {
        let derived = store.derived_through().await?;
        if derived >= head || std::time::Instant::now() >= deadline {
            return Ok(derived);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Check 3: merge calls (by id) with call events (by id, position); and the named calls
/// the caller-name index should hold must be in it. A call with events past `derived`
/// (the derived tables' watermark) is left out: its row may not hold them yet.
async fn check_calls(
    store: &dyn Store,
    report: &mut Report,
    derived: i64,
) -> Result<(), StoreError> {
    let mut rows = CallRows::default();
    let mut events = CallEvents::default();
    let mark = store.name_index_mark().await?;
    let mut indexed = Vec::new();
    loop {
        let next_row = rows.peek(store).await?.map(|row| row.call_id.clone());
        let next_event = events.peek(store).await?;
        let call_id = match (next_row, next_event) {
            (None, None) => break,
            (Some(row), None) => row,
            (None, Some(event)) => event,
            (Some(row), Some(event)) => row.min(event),
        };
        let row = rows.take_if(store, &call_id).await?;
        let call_events = events.take_call(store, &call_id).await?;
        if call_events.iter().any(|event| event.seq > derived) {
            continue;
        }
        report.response.calls_checked += 1;
        if chained_recording(&call_events).is_some() && store.recording(&call_id).await?.is_none() {
            report.add(
                "projection",
                0,
                &call_id,
                format!("call {call_id} has a chained recording event but its recording row was deleted"),
            );
        }
        let expected = match expected_row(&call_events) {
            Ok(expected) => expected,
            Err(problem) => {
                report.add("purged", 0, &call_id, format!("call {call_id} {problem}"));
                continue;
            }
        };
        match (expected, row) {
            (None, None) => {}
            (Some(_), None) => report.add(
                "projection",
                0,
                &call_id,
                format!("call {call_id} has chained events but its row was deleted"),
            ),
            (None, Some(_)) => report.add(
                "projection",
                0,
                &call_id,
                format!("call {call_id} has a row but no chained events: the row was inserted"),
            ),
            (Some(expected), Some(actual)) => {
                if !actual.caller_display_name.is_empty()
                    && call_events.iter().all(|event| event.seq <= mark)
                {
                    indexed.push(actual.clone());
                    if indexed.len() >= PAGE as usize {
                        check_name_index(store, report, &mut indexed).await?;
                    }
                }
                let mut differences: Vec<String> = record_fields(&expected)
                    .into_iter()
                    .zip(record_fields(&actual))
                    .filter(|(want, have)| want.1 != have.1)
                    .map(|(want, have)| {
                        format!("{} is {:?}, its events say {:?}", want.0, have.1, want.1)
                    })
                    .collect();
                // Not an export column, but it takes a call out of the statistics.
                if expected.probe != actual.probe {
                    differences.push(format!(
                        "probe is {}, its events say {}",
                        actual.probe, expected.probe
                    ));
                }
                // Nor are these (exports keep their signed row format); the record
                // says what the operator was told.
                for (name, want, have) in [
                    (
                        "prior_reports",
                        expected.prior_reports,
                        actual.prior_reports,
                    ),
                    ("prior_flags", expected.prior_flags, actual.prior_flags),
                ] {
                    if want != have {
                        differences.push(format!("{name} is {have}, its events say {want}"));
                    }
                }
                if !differences.is_empty() {
                    report.add(
                        "projection",
                        0,
                        &call_id,
                        format!(
                            "call {call_id}'s row was modified: {}",
                            differences.join("; ")
                        ),
                    );
                }
            }
        }
    }
    check_name_index(store, report, &mut indexed).await
}

/// What the chain says of one report: its row and where each version is.
#[derive(Debug, Default)]
struct ChainedReport {
    /// The row its last version makes.
    row: Option<ReportRow>,
    /// (version, chain position) of each version, in chain order.
    versions: Vec<(i64, i64)>,
}

/// Every chained report by id (reports are few: one per interference, not per call).
type ChainedReports = BTreeMap<String, ChainedReport>;

/// Check 4: each report row against its last version; `report_versions` against the chain.
async fn check_reports(
    store: &dyn Store,
    report: &mut Report,
    mut chained: ChainedReports,
) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let page = store.reports_after(after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE as usize;
        after = page.last().map(|row| row.report_id.clone());
        for row in page {
            seen.insert(row.report_id.clone());
            let id = row.report_id.clone();
            let call_id = row.call_id.clone();
            match chained.get(&id).and_then(|chain| chain.row.as_ref()) {
                None => report.add(
                    "projection",
                    0,
                    &call_id,
                    format!("report {id} has a row but no chained versions: the row was inserted"),
                ),
                Some(expected) if *expected != row => report.add(
                    "projection",
                    row.last_seq,
                    &call_id,
                    format!(
                        "report {id}'s row was modified: {} differ from its version {} (event #{})",
                        report_row_differences(expected, &row).join(", "),
                        expected.version,
                        expected.last_seq
                    ),
                ),
                Some(_) => {}
            }
        }
        if done {
            break;
        }
    }
    for (id, chain) in &chained {
        if !seen.contains(id) {
            let call_id = chain.row.as_ref().map_or("", |row| row.call_id.as_str());
            report.add(
                "projection",
                0,
                call_id,
                format!("report {id} has chained versions but its row was deleted"),
            );
        }
    }
    let mut after: Option<(String, i64)> = None;
    loop {
        let page = store
            .report_versions_after(after.as_ref().map(|(id, v)| (id.as_str(), *v)), PAGE)
            .await?;
        let done = page.len() < PAGE as usize;
        after = page.last().map(|(id, version, _)| (id.clone(), *version));
        for (id, version, seq) in page {
            let listed = chained.get_mut(&id).and_then(|chain| {
                let position = chain.versions.iter().position(|v| *v == (version, seq))?;
                Some(chain.versions.remove(position))
            });
            if listed.is_none() {
                report.add(
                    "projection",
                    seq,
                    "",
                    format!(
                        "report {id} version {version} is listed at event #{seq}, which does not hold it"
                    ),
                );
            }
        }
        if done {
            break;
        }
    }
    for (id, chain) in chained {
        for (version, seq) in chain.versions {
            report.add(
                "projection",
                seq,
                "",
                format!(
                    "report {id} version {version} (event #{seq}) is missing from report_versions"
                ),
            );
        }
    }
    Ok(())
}

/// The names of the columns in which two report rows differ.
fn report_row_differences(want: &ReportRow, have: &ReportRow) -> Vec<&'static str> {
    let mut columns = Vec::new();
    let mut differ = |name, differs: bool| {
        if differs {
            columns.push(name);
        }
    };
    differ("call_id", want.call_id != have.call_id);
    differ("version", want.version != have.version);
    differ("status", want.status != have.status);
    differ("kind", want.kind != have.kind);
    differ("opened_by", want.opened_by != have.opened_by);
    differ("opened_at_ms", want.opened_at_ms != have.opened_at_ms);
    differ("court_name", want.court_name != have.court_name);
    differ("line_number", want.line_number != have.line_number);
    differ("staff_name", want.staff_name != have.staff_name);
    differ("staff_id", want.staff_id != have.staff_id);
    differ("owners", want.owners != have.owners);
    differ("case_numbers", want.case_numbers != have.case_numbers);
    differ("report", want.report != have.report);
    differ("last_seq", want.last_seq != have.last_seq);
    columns
}

/// Reports each of `calls` whose name the caller-name index lacks grams of (rows deleted
/// from it, or re-keyed): name searches would pass it over. Empties `calls`.
async fn check_name_index(
    store: &dyn Store,
    report: &mut Report,
    calls: &mut Vec<CallRecord>,
) -> Result<(), StoreError> {
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (call_id, gram) in store.missing_name_grams(calls).await? {
        missing
            .entry(call_id)
            .or_default()
            .push(format!("{gram:?}"));
    }
    calls.clear();
    for (call_id, grams) in missing {
        report.add(
            "projection",
            0,
            &call_id,
            format!(
                "call {call_id} is missing from the caller-name index ({}): searches by \
                 caller name would not find it",
                grams.join(", ")
            ),
        );
    }
    Ok(())
}

/// Call rows in id order, a page at a time.
#[derive(Debug, Default)]
struct CallRows {
    /// Rows fetched, not yet consumed (reversed: next at the end).
    buffer: Vec<CallRecord>,
    /// The last id fetched.
    after: Option<String>,
    /// No more rows.
    done: bool,
}

impl CallRows {
    async fn peek(&mut self, store: &dyn Store) -> Result<Option<&CallRecord>, StoreError> {
        if self.buffer.is_empty() && !self.done {
            let mut page = store.calls_after(self.after.as_deref(), PAGE).await?;
            self.done = page.len() < PAGE as usize;
            self.after = page.last().map(|row| row.call_id.clone());
            page.reverse();
            self.buffer = page;
        }
        Ok(self.buffer.last())
    }

    async fn take_if(
        &mut self,
        store: &dyn Store,
        call_id: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        if self
            .peek(store)
            .await?
            .is_some_and(|row| row.call_id == call_id)
        {
            return Ok(self.buffer.pop());
        }
        Ok(None)
    }
}

/// Call events in (call id, position) order, a page at a time.
#[derive(Debug, Default)]
struct CallEvents {
    /// Events fetched, not yet consumed (reversed: next at the end).
    buffer: Vec<StoredEvent>,
    /// The last (call id, position) fetched.
    after: Option<(String, i64)>,
    /// No more events.
    done: bool,
}

impl CallEvents {
    async fn peek(&mut self, store: &dyn Store) -> Result<Option<String>, StoreError> {
        if self.buffer.is_empty() && !self.done {
            let after = self.after.as_ref().map(|(call, seq)| (call.as_str(), *seq));
            let mut page = store.call_events_after(after, PAGE).await?;
            self.done = page.len() < PAGE as usize;
            self.after = page
                .last()
                .and_then(|event| Some((event.header.call_id.clone()?, event.seq)));
            page.reverse();
            self.buffer = page;
        }
        Ok(self
            .buffer
            .last()
            .and_then(|event| event.header.call_id.clone()))
    }

    async fn take_call(
        &mut self,
        store: &dyn Store,
        call_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = Vec::new();
        while self.peek(store).await?.as_deref() == Some(call_id) {
            events.extend(self.buffer.pop());
        }
        Ok(events)
    }
}
