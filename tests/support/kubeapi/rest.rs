//! The REST half of the test API server: stored objects as the real API serialises them
//! (uids, timestamps, base64 secret data), `get` and `list` with label selectors, and the
//! `Status` error bodies. It never runs anything; exec lives in `exec`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{lock, Body, Shared, State};

pub(super) fn upsert(list: &mut Vec<Value>, obj: Value) {
    let key = |o: &Value| {
        (
            o["metadata"]["namespace"].clone(),
            o["metadata"]["name"].clone(),
        )
    };
    list.retain(|o| key(o) != key(&obj));
    list.push(obj);
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn uid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn objects<'a>(st: &'a State, kind: &str) -> &'a [Value] {
    match kind {
        "nodes" => &st.nodes,
        "pods" => &st.pods,
        _ => &st.secrets,
    }
}

pub(super) fn get(state: &Shared, kind: &str, ns: Option<&str>, name: &str) -> Response<Body> {
    let st = lock(state);
    let found = objects(&st, kind).iter().find(|o| {
        o["metadata"]["name"] == name && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
    });
    match found {
        Some(o) => ok(o),
        None => not_found(kind, name),
    }
}

pub(super) fn list(
    state: &Shared,
    kind: &str,
    ns: Option<&str>,
    query: &[(String, String)],
) -> Response<Body> {
    if query
        .iter()
        .any(|(k, _)| k == "fieldSelector" || k == "watch")
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "fieldSelector and watch are not supported by the test API server",
            None,
        );
    }
    let selector = match parse_selector(param(query, "labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
    };
    let st = lock(state);
    let items: Vec<Value> = objects(&st, kind)
        .iter()
        .filter(|o| ns.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .filter(|o| selector.iter().all(|r| r.matches(&o["metadata"]["labels"])))
        .map(|o| {
            // The real server leaves kind and apiVersion off the items of a list.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let list_kind = match kind {
        "nodes" => "NodeList",
        "pods" => "PodList",
        _ => "SecretList",
    };
    ok(&json!({"kind": list_kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items}))
}

enum Requirement {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let value = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Eq(k, v) => value(k) == Some(v),
            Requirement::Ne(k, v) => value(k) != Some(v),
            Requirement::Exists(k) => value(k).is_some(),
            Requirement::Absent(k) => value(k).is_none(),
        }
    }
}

/// Equality-based selectors and existence; set-based `in (…)` would need a real parser, and
/// refusing it loudly beats silently matching the wrong objects.
fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let valid = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let mut out = vec![];
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (req, key) = if let Some((k, v)) = term.split_once("!=") {
            (Requirement::Ne(k.trim().into(), v.trim().into()), k.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (Requirement::Eq(k.trim().into(), v.trim().into()), k.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            (Requirement::Absent(k.trim().into()), k.trim())
        } else {
            (Requirement::Exists(term.into()), term)
        };
        if !valid(key) {
            return Err(format!(
                "unable to parse requirement: invalid label key {term:?}"
            ));
        }
        out.push(req);
    }
    Ok(out)
}

pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn ok(body: &Value) -> Response<Body> {
    json_response(StatusCode::OK, body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = respond(code, &[], Bytes::from(body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn respond(
    code: StatusCode,
    headers: &[(HeaderName, &str)],
    body: Bytes,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(name.clone(), v);
        }
    }
    r
}

pub(super) fn status(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Body> {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

pub(super) fn not_found(kind: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

pub(super) fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// A websocket upgrade's answer key and the subprotocols the client offered (the exec and
/// port-forward endpoints both start this way), or the API server's refusal.
pub(super) fn websocket_handshake(
    headers: &hyper::HeaderMap,
) -> Result<(String, Vec<String>), Box<Response<Body>>> {
    let is_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (is_websocket, key) else {
        return Err(Box::new(bad_request("Upgrade request required")));
    };
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    Ok((accept, offered))
}
