//! The bucket's operations as the XML API defines them: simple and generation-conditional
//! writes, multipart uploads (parts of at least 5 MiB but the last, completed in ascending
//! order with matching ETags), reads whole or by `Range`, deletes, and `list-type=2` pages of
//! at most 1,000 entries. Each holds the state lock for its whole check-and-change, so two
//! racing conditional writes cannot both win; none copies object data.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ops::Range;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::http::response::Builder;
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::wire::{elements, empty, error, escape, status_only, unescape, without_body_if, xml};
use super::{lock, Body, Call, Object, Shared, State, Upload, GENERATION_MATCH};

/// GCS refuses to complete an upload whose parts, all but the last, are smaller than this.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART_NUMBER: u32 = 10_000;
/// The most keys one list page holds, and the default.
const MAX_KEYS: usize = 1000;

/// The refusal, if `x-goog-if-generation-match` does not hold for the object as it is now
/// (0: it must not exist).
fn refused_by_precondition(st: &State, call: &Call, key: &str) -> Option<Response<Body>> {
    let want = call.header(GENERATION_MATCH)?;
    let Ok(want) = want.parse::<u64>() else {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid argument: x-goog-if-generation-match must be a number.",
        ));
    };
    let have = st.objects.get(key).map_or(0, |o| o.generation);
    (want != have && !st.ignore_preconditions).then(|| {
        error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        )
    })
}

impl State {
    /// Generations are microsecond timestamps, as on GCS, and strictly increase.
    fn next_generation(&mut self) -> u64 {
        let now = Utc::now().timestamp_micros() as u64;
        self.generation = now.max(self.generation + 1);
        self.generation
    }

    fn store(&mut self, key: &str, chunks: Vec<Bytes>, etag: String, content_type: String) -> u64 {
        let generation = self.next_generation();
        let size = chunks.iter().map(|c| c.len() as u64).sum();
        self.objects.insert(
            key.to_string(),
            Object {
                chunks,
                size,
                generation,
                etag,
                updated: Utc::now(),
                content_type,
            },
        );
        generation
    }
}

fn content_type(call: &Call) -> String {
    call.header("content-type")
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// A content hash the size of GCS's MD5 ETag. Clients treat ETags as opaque, so a truncated
/// SHA-256 (already at hand) serves.
fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(data)[..16]))
}

pub(super) fn put_object(state: &Shared, call: &Call, key: &str, data: Bytes) -> Response<Body> {
    let mut st = lock(state);
    if let Some(r) = refused_by_precondition(&st, call, key) {
        return r;
    }
    let etag = etag_of(&data);
    let size = data.len();
    let generation = st.store(key, vec![data], etag.clone(), content_type(call));
    stored(
        Response::builder().status(StatusCode::OK),
        &etag,
        generation,
        size as u64,
    )
    .body(empty())
    .unwrap()
}

fn stored(b: Builder, etag: &str, generation: u64, size: u64) -> Builder {
    b.header(header::ETAG, etag)
        .header("x-goog-generation", generation)
        .header("x-goog-metageneration", 1)
        .header("x-goog-stored-content-length", size)
        .header("x-goog-stored-content-encoding", "identity")
}

pub(super) fn initiate(state: &Shared, call: &Call, key: &str) -> Response<Body> {
    let id = format!("ABPnzm{:032x}", rand::random::<u128>());
    let upload = Upload {
        key: key.to_string(),
        content_type: content_type(call),
        parts: BTreeMap::new(),
    };
    let bucket = {
        let mut st = lock(state);
        st.uploads.insert(id.clone(), upload);
        st.bucket.clone()
    };
    xml(format!(
        "<InitiateMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>\
         <Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId>\
         </InitiateMultipartUploadResult>",
        escape(&bucket),
        escape(key)
    ))
}

fn no_such_upload() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The requested upload was not found.",
    )
}

pub(super) fn put_part(state: &Shared, call: &Call, key: &str, data: Bytes) -> Response<Body> {
    let id = call.query("uploadId").unwrap_or_default();
    let number = call
        .query("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n));
    let Some(number) = number else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive.",
        );
    };
    let mut st = lock(state);
    let Some(upload) = st.uploads.get_mut(id).filter(|u| u.key == key) else {
        return no_such_upload();
    };
    let etag = etag_of(&data);
    upload.parts.insert(number, (data, etag.clone()));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, etag)
        .body(empty())
        .unwrap()
}

pub(super) fn complete(state: &Shared, call: &Call, key: &str, body: &[u8]) -> Response<Body> {
    let id = call.query("uploadId").unwrap_or_default().to_string();
    let Some(listed) = std::str::from_utf8(body).ok().and_then(parse_complete) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate.",
        );
    };
    let mut st = lock(state);
    let Some(upload) = st.uploads.get(&id).filter(|u| u.key == key) else {
        return no_such_upload();
    };
    if listed.is_empty() || listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "The list of parts was not in ascending order.",
        );
    }
    let mut chunks = Vec::with_capacity(listed.len());
    for (i, (number, etag)) in listed.iter().enumerate() {
        let Some((data, have)) = upload.parts.get(number).filter(|(_, e)| e == etag) else {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "One or more of the specified parts could not be found.",
            );
        };
        if i + 1 < listed.len() && (data.len() as u64) < MIN_PART {
            return error(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            );
        }
        chunks.push((data.clone(), have.clone()));
    }
    if let Some(r) = refused_by_precondition(&st, call, key) {
        return r;
    }
    let upload = st.uploads.remove(&id).unwrap();
    let tags: String = chunks.iter().map(|(_, e)| e.as_str()).collect();
    let etag = format!("\"{}-{}\"", &etag_of(tags.as_bytes())[1..33], chunks.len());
    let data: Vec<Bytes> = chunks.into_iter().map(|(d, _)| d).collect();
    let generation = st.store(key, data, etag.clone(), upload.content_type);
    let (bucket, url) = (st.bucket.clone(), format!("/{}/{key}", st.bucket));
    drop(st);
    let body = format!(
        "<CompleteMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>\
         <Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag>\
         </CompleteMultipartUploadResult>",
        escape(&url),
        escape(&bucket),
        escape(key),
        escape(&etag)
    );
    let mut r = xml(body);
    r.headers_mut()
        .insert("x-goog-generation", HeaderValue::from(generation));
    r
}

/// The (part number, ETag) pairs of a CompleteMultipartUpload document, in document order.
fn parse_complete(doc: &str) -> Option<Vec<(u32, String)>> {
    let root = elements(doc, "CompleteMultipartUpload")
        .into_iter()
        .next()?;
    elements(root, "Part")
        .into_iter()
        .map(|part| {
            let number = elements(part, "PartNumber").first()?.trim().parse().ok()?;
            let etag = unescape(elements(part, "ETag").first()?.trim());
            Some((number, etag))
        })
        .collect()
}

pub(super) fn abort(state: &Shared, call: &Call, key: &str) -> Response<Body> {
    let id = call.query("uploadId").unwrap_or_default();
    let mut st = lock(state);
    if st.uploads.get(id).is_none_or(|u| u.key != key) {
        return no_such_upload();
    }
    st.uploads.remove(id);
    status_only(StatusCode::NO_CONTENT)
}

pub(super) fn delete(state: &Shared, call: &Call, key: &str) -> Response<Body> {
    let mut st = lock(state);
    if !st.objects.contains_key(key) {
        return no_such_key();
    }
    if let Some(r) = refused_by_precondition(&st, call, key) {
        return r;
    }
    st.objects.remove(key);
    status_only(StatusCode::NO_CONTENT)
}

fn no_such_key() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

pub(super) fn get(state: &Shared, call: &Call, key: &str) -> Response<Body> {
    let head = call.method == Method::HEAD;
    let st = lock(state);
    let object = st.objects.get(key).filter(|o| {
        call.query("generation")
            .is_none_or(|g| g == o.generation.to_string())
    });
    let Some(o) = object else {
        return without_body_if(head, no_such_key());
    };
    if call.header("if-match").is_some_and(|t| t != o.etag) {
        let r = error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        );
        return without_body_if(head, r);
    }
    if call.header("if-none-match").is_some_and(|t| t == o.etag) {
        return status_only(StatusCode::NOT_MODIFIED);
    }
    let b = Response::builder()
        .header(
            header::LAST_MODIFIED,
            o.updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        )
        .header(header::CONTENT_TYPE, &o.content_type)
        .header(header::ACCEPT_RANGES, "bytes");
    let b = stored(b, &o.etag, o.generation, o.size);
    let range = match call.header("range").map(|r| parse_range(r, o.size)) {
        None | Some(RangeSpec::Ignored) => None,
        Some(RangeSpec::Unsatisfiable) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range cannot be satisfied.",
            );
            let total = HeaderValue::from_str(&format!("bytes */{}", o.size)).unwrap();
            r.headers_mut().insert(header::CONTENT_RANGE, total);
            return without_body_if(head, r);
        }
        Some(RangeSpec::Bytes(r)) => Some(r),
    };
    let (b, range) = match range {
        Some(r) => (
            b.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, o.size),
            ),
            r,
        ),
        None => (b.status(StatusCode::OK), 0..o.size),
    };
    let b = b.header(header::CONTENT_LENGTH, range.end - range.start);
    if head {
        return b.body(empty()).unwrap();
    }
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = slice(&o.chunks, range)
        .into_iter()
        .map(|c| Ok(Frame::data(c)))
        .collect();
    b.body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap()
}

enum RangeSpec {
    Bytes(Range<u64>),
    /// Not a single byte range: served whole, as HTTP says.
    Ignored,
    Unsatisfiable,
}

fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.strip_prefix("bytes=") else {
        return RangeSpec::Ignored;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => a..(b + 1).min(size),
        (Ok(a), Err(_)) if last.is_empty() => a..size,
        (Err(_), Ok(n)) if first.is_empty() => size.saturating_sub(n)..size,
        _ => return RangeSpec::Ignored,
    };
    if range.start >= size || range.is_empty() {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Bytes(range)
    }
}

/// The parts of `chunks` that cover `range`, sliced, never copied.
fn slice(chunks: &[Bytes], range: Range<u64>) -> Vec<Bytes> {
    let mut out = vec![];
    let mut at = 0u64;
    for c in chunks {
        let (start, end) = (at, at + c.len() as u64);
        at = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.saturating_sub(start) as usize;
        let to = (range.end.min(end) - start) as usize;
        out.push(c.slice(from..to));
    }
    out
}

pub(super) fn list(state: &Shared, call: &Call) -> Response<Body> {
    if call.query("list-type") != Some("2") {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This test server lists only with list-type=2.",
        );
    }
    let prefix = call.query("prefix").unwrap_or("");
    let delimiter = call.query("delimiter").filter(|d| !d.is_empty());
    let max = call
        .query("max-keys")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(MAX_KEYS)
        .min(MAX_KEYS);
    let after = match call.query("continuation-token") {
        Some(t) => match hex::decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(k) => Some(k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Invalid argument: the continuation token is not valid.",
                )
            }
        },
        None => call.query("start-after").map(str::to_string),
    };
    let st = lock(state);
    let (mut contents, mut prefixes) = (String::new(), Vec::<String>::new());
    let (mut count, mut last, mut truncated) = (0usize, None::<String>, false);
    let candidates = st
        .objects
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && after.as_ref().is_none_or(|a| *k > a));
    for (k, o) in candidates {
        let rolled = delimiter.and_then(|d| {
            k[prefix.len()..]
                .find(d)
                .map(|i| k[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(p) = &rolled {
            if prefixes.last() == Some(p) {
                last = Some(k.clone());
                continue;
            }
        }
        if count == max {
            truncated = true;
            break;
        }
        count += 1;
        last = Some(k.clone());
        match rolled {
            Some(p) => prefixes.push(p),
            None => contents.push_str(&format!(
                "<Contents><Key>{}</Key><Generation>{}</Generation>\
                 <MetaGeneration>1</MetaGeneration><LastModified>{}</LastModified>\
                 <ETag>{}</ETag><Size>{}</Size></Contents>",
                escape(k),
                o.generation,
                o.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
                escape(&o.etag),
                o.size
            )),
        }
    }
    let prefixes: String = prefixes
        .iter()
        .map(|p| {
            format!(
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                escape(p)
            )
        })
        .collect();
    let next = match (truncated, last) {
        (true, Some(l)) => format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            hex::encode(l)
        ),
        _ => String::new(),
    };
    xml(format!(
        "<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>\
         <Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max}</MaxKeys><KeyCount>{count}</KeyCount>\
         <IsTruncated>{truncated}</IsTruncated>{next}{contents}{prefixes}</ListBucketResult>",
        escape(&st.bucket),
        escape(prefix)
    ))
}
