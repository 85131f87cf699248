//! A call's recording for the browser's audio player and as a download: read
//! through `GetRecording` with the reason the user gave (each request, each seek
//! of the player included, is an access event), checked against its chained
//! SHA-256, served with HTTP ranges so the player can seek, and named by its hash
//! in a `Repr-Digest` header.
//!
//! Chromium's player first asks for `Range: bytes=0-`; answered 206 with a
//! `Content-Range`, it asks for `bytes=N-` from where the user seeks (answered 200,
//! it would fetch the file from the start again). Each request reads the whole
//! file through `GetRecording` and checks its hash before the range is cut.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Status;

use super::{failure, Page};
use crate::contract::pb::get_recording_response::Item;
use crate::records::web::Console;

/// The recording's route.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/calls/{id}/audio", get(audio))
}

/// Which bytes of a file a request's `Range` header asks for (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No range, one the server may ignore (several ranges, bad syntax): all of it.
    Whole,
    /// Bytes `first..=last`.
    Part {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: u64,
    },
    /// A range that starts past the end (416).
    Unsatisfiable,
}

/// The range of a `length`-byte file that `header` asks for. A single range is
/// served (what media players send); several ranges, or a header that does not
/// parse, get the whole file, as RFC 9110 lets a server do.
pub fn byte_range(header: Option<&str>, length: u64) -> ByteRange {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            Ok(_) if length == 0 => ByteRange::Unsatisfiable,
            Ok(suffix) => ByteRange::Part {
                first: length.saturating_sub(suffix),
                last: length - 1,
            },
            Err(_) => ByteRange::Whole,
        };
    }
    let Ok(first) = first.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let last = match last {
        "" => u64::MAX,
        last => match last.parse::<u64>() {
            Ok(last) if last >= first => last,
            _ => return ByteRange::Whole,
        },
    };
    if first >= length {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part {
        first,
        last: last.min(length - 1),
    }
}

/// The audio request: why (required), and whether the browser should save it.
#[derive(Deserialize)]
struct AudioQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    download: String,
}

async fn audio(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AudioQuery>,
) -> Response {
    // Recordings are all call data: the roles that may see every call may hear them.
    let (visitor, mut caller) = match console
        .allowed(&headers, peer, format!("/calls/{id}"), Page::Calls)
        .await
    {
        Ok(allowed) => allowed,
        Err(response) => return response,
    };
    if query.reason.trim().is_empty() {
        let status = Status::invalid_argument(visitor.lang.text("error-reason-required"));
        return failure(visitor.chrome(), &status);
    }
    caller.reason = query.reason.trim().to_owned();
    let read: Result<(String, Vec<u8>), Status> = async {
        let mut stream = console.server.get_recording_as(&caller, id.clone()).await?;
        let mut sha256 = String::new();
        let mut file = Vec::new();
        while let Some(item) = stream.next().await {
            match item?.item {
                Some(Item::Recording(recording)) => sha256 = recording.sha256,
                Some(Item::Chunk(chunk)) => file.extend_from_slice(&chunk),
                None => {}
            }
        }
        if hex::encode(Sha256::digest(&file)) != sha256 {
            return Err(Status::data_loss(format!(
                "call {id}'s recording does not match its chained SHA-256 {sha256}: \
                 run `courtline records verify`"
            )));
        }
        Ok((sha256, file))
    }
    .await;
    let (sha256, file) = match read {
        Ok(read) => read,
        Err(status) => return failure(visitor.chrome(), &status),
    };
    let length = file.len() as u64;
    let range = byte_range(
        headers
            .get(header::RANGE)
            .and_then(|value| value.to_str().ok()),
        length,
    );
    let digest = hex::decode(&sha256)
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .unwrap_or_default();
    let disposition = if query.download == "1" {
        format!("attachment; filename=\"{id}.wav\"")
    } else {
        "inline".to_owned()
    };
    let (status, body, content_range) = match range {
        ByteRange::Whole => (StatusCode::OK, file, None),
        ByteRange::Part { first, last } => (
            StatusCode::PARTIAL_CONTENT,
            file[first as usize..=last as usize].to_vec(),
            Some(format!("bytes {first}-{last}/{length}")),
        ),
        ByteRange::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Vec::new(),
            Some(format!("bytes */{length}")),
        ),
    };
    let mut response = (status, Body::from(body)).into_response();
    let response_headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "audio/wav".to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (header::CACHE_CONTROL, "no-store".to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
        (
            header::HeaderName::from_static("repr-digest"),
            format!("sha-256=:{digest}:"),
        ),
    ]
    .into_iter()
    .chain(content_range.map(|range| (header::CONTENT_RANGE, range)))
    {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    }
    visitor.respond(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_served_and_others_get_the_whole_file() {
        let range = |header| byte_range(header, 1000);
        assert_eq!(range(None), ByteRange::Whole);
        assert_eq!(
            range(Some("bytes=0-")),
            ByteRange::Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(
            range(Some("bytes=100-199")),
            ByteRange::Part {
                first: 100,
                last: 199
            }
        );
        assert_eq!(
            range(Some("bytes=900-5000")),
            ByteRange::Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            range(Some("bytes=-100")),
            ByteRange::Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            range(Some("bytes=-5000")),
            ByteRange::Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(range(Some("bytes=1000-")), ByteRange::Unsatisfiable);
        assert_eq!(range(Some("bytes=-0")), ByteRange::Unsatisfiable);
        assert_eq!(range(Some("bytes=0-1,5-9")), ByteRange::Whole);
        assert_eq!(range(Some("bytes=9-1")), ByteRange::Whole);
        assert_eq!(range(Some("items=0-1")), ByteRange::Whole);
        assert_eq!(range(Some("bytes=x-1")), ByteRange::Whole);
        assert_eq!(byte_range(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=-1"), 0), ByteRange::Unsatisfiable);
    }
}
