//! The built-in kinds `get` turns from kube-apiserver's protobuf back into the JSON the API
//! serves: core/v1 ConfigMap and Secret, the objects an operator most often needs back from
//! a backup, with the full ObjectMeta. Field numbers follow k8s.io/api core/v1 and
//! k8s.io/apimachinery meta/v1 `generated.proto`; JSON follows their Go types (RFC 3339
//! times, base64 bytes, empty fields left out). Every other kind is left to the caller, which
//! names it by its envelope: a wrong guess at a field layout would hand back a wrong object.
//! Pure functions over bytes from a backup; a malformed value is `None`, never a panic.

use base64::Engine as _;
use serde_json::{json, Map, Value as Json};

use super::k8s::Envelope;

/// One protobuf field's payload.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = vec![];
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let f = match tag & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                b = &b[n..];
                Field::Bytes(v)
            }
            5 => {
                b = b.get(4..)?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((tag >> 3, f));
    }
    Some(out)
}

fn text(f: Field<'_>) -> Option<Json> {
    match f {
        Field::Bytes(b) => Some(Json::String(std::str::from_utf8(b).ok()?.to_string())),
        _ => None,
    }
}

fn int(f: Field<'_>) -> Option<Json> {
    match f {
        Field::Varint(v) => Some(json!(v as i64)),
        _ => None,
    }
}

fn boolean(f: Field<'_>) -> Option<Json> {
    match f {
        Field::Varint(v) => Some(json!(v != 0)),
        _ => None,
    }
}

fn b64(f: Field<'_>) -> Option<Json> {
    match f {
        Field::Bytes(b) => Some(json!(base64::engine::general_purpose::STANDARD.encode(b))),
        _ => None,
    }
}

fn message(f: Field<'_>) -> Option<Vec<(u64, Field<'_>)>> {
    match f {
        Field::Bytes(b) => fields(b),
        _ => None,
    }
}

/// meta/v1 Time `{seconds=1, nanos=2}`, as the RFC 3339 second the API prints.
fn time(f: Field<'_>) -> Option<Json> {
    let mut secs = 0i64;
    for (n, v) in message(f)? {
        if let (1, Field::Varint(s)) = (n, v) {
            secs = s as i64;
        }
    }
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    Some(json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// A map field entry `{key=1, value=2}` into `into`, its value made by `value`.
fn entry(
    into: &mut Map<String, Json>,
    f: Field<'_>,
    value: fn(Field<'_>) -> Option<Json>,
) -> Option<()> {
    let (mut k, mut v) = (None, None);
    for (n, x) in message(f)? {
        match n {
            1 => k = text(x),
            2 => v = value(x),
            _ => {}
        }
    }
    let empty = || match value(Field::Bytes(b"")) {
        Some(e) => e,
        None => Json::Null,
    };
    into.insert(k?.as_str()?.to_string(), v.unwrap_or_else(empty));
    Some(())
}

/// Sets `obj[name]` from a scalar field.
fn set(obj: &mut Map<String, Json>, name: &str, v: Option<Json>) -> Option<()> {
    obj.insert(name.to_string(), v?);
    Some(())
}

/// Appends to the array `obj[name]`.
fn push(obj: &mut Map<String, Json>, name: &str, v: Option<Json>) -> Option<()> {
    let list = obj.entry(name).or_insert_with(|| json!([]));
    list.as_array_mut()?.push(v?);
    Some(())
}

/// Fills the map `obj[name]` with one entry.
fn map_entry(
    obj: &mut Map<String, Json>,
    name: &str,
    f: Field<'_>,
    value: fn(Field<'_>) -> Option<Json>,
) -> Option<()> {
    let m = obj.entry(name).or_insert_with(|| json!({}));
    entry(m.as_object_mut()?, f, value)
}

fn owner_reference(f: Field<'_>) -> Option<Json> {
    let mut o = Map::new();
    for (n, v) in message(f)? {
        match n {
            1 => set(&mut o, "kind", text(v))?,
            3 => set(&mut o, "name", text(v))?,
            4 => set(&mut o, "uid", text(v))?,
            5 => set(&mut o, "apiVersion", text(v))?,
            6 => set(&mut o, "controller", boolean(v))?,
            7 => set(&mut o, "blockOwnerDeletion", boolean(v))?,
            _ => {}
        }
    }
    Some(Json::Object(o))
}

fn managed_fields_entry(f: Field<'_>) -> Option<Json> {
    let mut o = Map::new();
    for (n, v) in message(f)? {
        match n {
            1 => set(&mut o, "manager", text(v))?,
            2 => set(&mut o, "operation", text(v))?,
            3 => set(&mut o, "apiVersion", text(v))?,
            4 => set(&mut o, "time", time(v))?,
            6 => set(&mut o, "fieldsType", text(v))?,
            7 => {
                // FieldsV1 {raw=1}: the JSON of the managed fields.
                let raw = message(v)?
                    .into_iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, r)| r);
                if let Some(Field::Bytes(r)) = raw {
                    o.insert("fieldsV1".into(), serde_json::from_slice(r).ok()?);
                }
            }
            8 => set(&mut o, "subresource", text(v))?,
            _ => {}
        }
    }
    Some(Json::Object(o))
}

fn object_meta(f: Field<'_>) -> Option<Json> {
    let mut o = Map::new();
    for (n, v) in message(f)? {
        match n {
            1 => set(&mut o, "name", text(v))?,
            2 => set(&mut o, "generateName", text(v))?,
            3 => set(&mut o, "namespace", text(v))?,
            4 => set(&mut o, "selfLink", text(v))?,
            5 => set(&mut o, "uid", text(v))?,
            6 => set(&mut o, "resourceVersion", text(v))?,
            7 => set(&mut o, "generation", int(v))?,
            8 => set(&mut o, "creationTimestamp", time(v))?,
            9 => set(&mut o, "deletionTimestamp", time(v))?,
            10 => set(&mut o, "deletionGracePeriodSeconds", int(v))?,
            11 => map_entry(&mut o, "labels", v, text)?,
            12 => map_entry(&mut o, "annotations", v, text)?,
            13 => push(&mut o, "ownerReferences", owner_reference(v))?,
            14 => push(&mut o, "finalizers", text(v))?,
            17 => push(&mut o, "managedFields", managed_fields_entry(v))?,
            _ => {}
        }
    }
    Some(Json::Object(o))
}

/// The object in `e` as the API's JSON, for the kinds this module knows; `None` for other
/// kinds and for a value that does not decode.
pub fn to_json(e: &Envelope<'_>) -> Option<Json> {
    if !e.content_encoding.is_empty() {
        return None;
    }
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(e.api_version));
    o.insert("kind".into(), json!(e.kind));
    match (e.api_version.as_str(), e.kind.as_str()) {
        ("v1", "ConfigMap") => {
            for (n, v) in fields(e.raw)? {
                match n {
                    1 => set(&mut o, "metadata", object_meta(v))?,
                    2 => map_entry(&mut o, "data", v, text)?,
                    3 => map_entry(&mut o, "binaryData", v, b64)?,
                    4 => set(&mut o, "immutable", boolean(v))?,
                    _ => {}
                }
            }
        }
        ("v1", "Secret") => {
            for (n, v) in fields(e.raw)? {
                match n {
                    1 => set(&mut o, "metadata", object_meta(v))?,
                    2 => map_entry(&mut o, "data", v, b64)?,
                    3 => set(&mut o, "type", text(v))?,
                    4 => map_entry(&mut o, "stringData", v, text)?,
                    5 => set(&mut o, "immutable", boolean(v))?,
                    _ => {}
                }
            }
        }
        _ => return None,
    }
    Some(Json::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, v: &[u8]) -> Vec<u8> {
        // Tags past field 15 take two varint bytes.
        let tag = u16::from(n) << 3 | 2;
        let mut out = if tag < 0x80 {
            vec![tag as u8]
        } else {
            vec![(tag as u8) | 0x80, (tag >> 7) as u8]
        };
        out.push(v.len() as u8);
        out.extend_from_slice(v);
        out
    }

    fn entry(n: u8, k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = field(1, k.as_bytes());
        e.extend(field(2, v));
        field(n, &e)
    }

    #[test]
    fn a_protobuf_configmap_becomes_the_apis_json() {
        let mut owner = field(1, b"Deployment");
        owner.extend(field(3, b"web"));
        owner.extend(field(5, b"apps/v1"));
        owner.extend([6 << 3, 1]);
        let mut managed = field(1, b"kubectl");
        managed.extend(field(7, &field(1, br#"{"f:data":{}}"#)));
        let mut meta = field(1, b"app");
        meta.extend(field(3, b"default"));
        meta.extend([7 << 3, 3]);
        meta.extend(field(13, &owner));
        meta.extend(field(14, b"example.com/keep"));
        meta.extend(field(17, &managed));
        let mut raw = field(1, &meta);
        raw.extend(entry(2, "a.conf", b"x=1"));
        raw.extend(entry(3, "blob", &[0, 1, 2]));
        raw.extend([4 << 3, 1]);
        let e = Envelope {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            raw: &raw,
            content_encoding: String::new(),
        };
        assert_eq!(
            to_json(&e).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "namespace": "default", "generation": 3,
                    "ownerReferences": [{"kind": "Deployment", "name": "web", "apiVersion": "apps/v1", "controller": true}],
                    "finalizers": ["example.com/keep"],
                    "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}]},
                "data": {"a.conf": "x=1"},
                "binaryData": {"blob": "AAEC"},
                "immutable": true,
            })
        );
        let pod = Envelope {
            kind: "Pod".into(),
            ..e.clone()
        };
        assert_eq!(
            to_json(&pod),
            None,
            "kinds it does not know are not guessed"
        );
        let broken = Envelope {
            raw: &raw[..raw.len() - 3],
            ..e
        };
        assert_eq!(to_json(&broken), None);
    }
}
