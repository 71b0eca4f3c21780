//! What kube-apiserver stores as a value, told apart: JSON (custom resources, and every
//! object of an apiserver run with JSON storage), or protobuf behind the `k8s\0` magic in a
//! `runtime.Unknown` envelope `{typeMeta=1 {apiVersion=1, kind=2}, raw=2,
//! contentEncoding=3, contentType=4}` (built-in types by default). The envelope names the
//! object's apiVersion and kind; `objects` decodes `raw` into the object's JSON. Also the
//! `--clean` rule for JSON objects. Pure functions over values from a backup.

use serde_json::Value as Json;

/// The magic in front of kube-apiserver's protobuf values.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

/// A stored value, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored<'a> {
    /// A JSON object (the bytes as stored are kept alongside by the caller).
    Json(Json),
    /// A protobuf object in its envelope.
    Protobuf(Envelope<'a>),
    /// Anything else (a non-Kubernetes key, or a value neither JSON nor protobuf).
    Opaque,
}

/// The `runtime.Unknown` envelope of a protobuf value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope<'a> {
    /// e.g. `v1`, `apps/v1`.
    pub api_version: String,
    /// e.g. `Secret`.
    pub kind: String,
    /// The object, protobuf-encoded.
    pub raw: &'a [u8],
    /// Usually empty.
    pub content_encoding: String,
}

/// Classifies a stored value.
pub fn classify(v: &[u8]) -> Stored<'_> {
    if let Some(pb) = v.strip_prefix(PROTOBUF_MAGIC) {
        return decode_envelope(pb).map_or(Stored::Opaque, Stored::Protobuf);
    }
    match serde_json::from_slice::<Json>(v) {
        Ok(j @ Json::Object(_)) => Stored::Json(j),
        _ => Stored::Opaque,
    }
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

/// Decodes a `runtime.Unknown` (the bytes after the magic).
pub fn decode_envelope(b: &[u8]) -> Option<Envelope<'_>> {
    let mut e = Envelope::default();
    for (field, v) in fields(b)? {
        match field {
            1 => {
                for (f, t) in fields(v)? {
                    match f {
                        1 => e.api_version = string(t)?,
                        2 => e.kind = string(t)?,
                        _ => {}
                    }
                }
            }
            2 => e.raw = v,
            3 => e.content_encoding = string(v)?,
            _ => {}
        }
    }
    (!e.kind.is_empty()).then_some(e)
}

/// The length-delimited fields of a protobuf message (other wire types are skipped).
fn fields(b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    Some(
        super::objects::fields(b)?
            .into_iter()
            .filter_map(|(n, w)| match w {
                super::objects::Wire::Bytes(v) => Some((n, v)),
                _ => None,
            })
            .collect(),
    )
}

/// Removes what the server sets, so the object can be applied again: `metadata`'s
/// resourceVersion, uid and managedFields, and `status`.
pub fn clean(obj: &mut Json) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Json::as_object_mut) {
            for f in ["resourceVersion", "uid", "managedFields"] {
                meta.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_json_are_told_apart() {
        // typeMeta {apiVersion "v1", kind "Secret"}, raw "\x0a\x00".
        let mut v = PROTOBUF_MAGIC.to_vec();
        v.extend_from_slice(&[0x0a, 0x0c, 0x0a, 0x02, b'v', b'1', 0x12, 0x06]);
        v.extend_from_slice(b"Secret");
        v.extend_from_slice(&[0x12, 0x02, 0x0a, 0x00]);
        let Stored::Protobuf(e) = classify(&v) else {
            panic!("not protobuf")
        };
        assert_eq!(
            (e.api_version.as_str(), e.kind.as_str(), e.raw),
            ("v1", "Secret", &[0x0a, 0][..])
        );
        assert!(matches!(classify(br#"{"kind":"X"}"#), Stored::Json(_)));
        assert_eq!(classify(b"plain"), Stored::Opaque);
        assert_eq!(classify(b"k8s\0\x0a\xff"), Stored::Opaque);
    }

    #[test]
    fn clean_drops_server_fields() {
        let mut j: Json = serde_json::from_str(
            r#"{"kind":"ConfigMap","metadata":{"name":"a","uid":"u","resourceVersion":"5","managedFields":[]},"status":{},"data":{"k":"v"}}"#,
        )
        .unwrap();
        clean(&mut j);
        assert_eq!(
            j,
            serde_json::json!({"kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}})
        );
    }
}
