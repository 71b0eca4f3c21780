//! The encodings the test server speaks: bearer tokens and self-signed service account JWTs
//! (checked against the key the server handed out), percent-encoded paths and queries, the
//! few XML elements a client sends, and GCS's XML error bodies. It holds no state.

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use rcgen::SigningKey;
use serde_json::Value;

use super::{Account, Body, Credential, State};

/// The scope object_store's self-signed JWTs carry.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub(super) fn authenticate(st: &State, value: Option<&HeaderValue>) -> Credential {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return Credential::Missing;
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| (value == "Bearer").then_some(""));
    let Some(token) = token.map(str::trim) else {
        return Credential::Invalid;
    };
    if token.is_empty() {
        Credential::Missing
    } else if token == st.token {
        Credential::Token
    } else if st.accounts.iter().any(|a| jwt_is_valid(a, token)) {
        Credential::ServiceAccount
    } else {
        Credential::Invalid
    }
}

/// Checks a self-signed service account JWT: header, claims, expiry and the RS256 signature
/// (PKCS#1 v1.5 is deterministic, so signing again with the key must give the same bytes).
fn jwt_is_valid(account: &Account, jwt: &str) -> bool {
    let segments: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = segments[..] else {
        return false;
    };
    let json = |p: &str| base64url_decode(p).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims), Some(signature)) = (json(h), json(c), base64url_decode(s))
    else {
        return false;
    };
    let now = Utc::now().timestamp();
    let expected = account.key.sign(format!("{h}.{c}").as_bytes()).ok();
    header["alg"] == "RS256"
        && header["kid"] == account.key_id.as_str()
        && claims["iss"] == account.email.as_str()
        && claims["sub"] == account.email.as_str()
        && claims["scope"] == SCOPE
        && claims["exp"].as_i64().is_some_and(|e| e > now)
        && claims["iat"].as_i64().is_some_and(|i| i <= now + 60)
        && expected.is_some_and(|e| e == signature)
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `%XX`-decodes `s`; in a query, `+` is a space.
pub(super) fn percent_decode(s: &str, query: bool) -> Option<String> {
    let (b, mut out, mut i) = (s.as_bytes(), Vec::with_capacity(s.len()), 0);
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The inner text of every `<tag>…</tag>` in `doc`, outermost first, not nested in itself.
pub(super) fn elements<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut out = vec![];
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // `<Part>` must not match `<PartNumber>`.
        if !after.starts_with(['>', ' ', '\t', '\r', '\n']) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let inner = &after[gt + 1..];
        let Some(end) = inner.find(&close) else { break };
        out.push(&inner[..end]);
        rest = &inner[end + close.len()..];
    }
    out
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

pub(super) fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub(super) fn empty() -> Body {
    Empty::new().boxed()
}

pub(super) fn xml(body: String) -> Response<Body> {
    let doc = format!("<?xml version='1.0' encoding='UTF-8'?>{body}");
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/xml; charset=UTF-8")
        .body(Full::new(Bytes::from(doc)).boxed())
        .unwrap()
}

/// A GCS XML error: the status and `<Error><Code>…</Code><Message>…</Message></Error>`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut r = xml(format!(
        "<Error><Code>{code}</Code><Message>{}</Message></Error>",
        escape(message)
    ));
    *r.status_mut() = status;
    r
}

pub(super) fn method_not_allowed() -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
    )
}

pub(super) fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(empty()).unwrap()
}

/// A HEAD response carries the status and headers of the GET, never a body.
pub(super) fn without_body_if(head: bool, r: Response<Body>) -> Response<Body> {
    if !head {
        return r;
    }
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    Response::from_parts(parts, empty())
}
