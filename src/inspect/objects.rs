//! Built-in Kubernetes objects, from kube-apiserver's protobuf back into the JSON the API
//! serves, for every kind in the schema table (`schema.rs`, Kubernetes 1.33): fields by
//! number, named as in JSON; Go structs embedded inline merged into their parent; the
//! apimachinery types that have a JSON form of their own (Time and MicroTime as RFC 3339,
//! Duration as Go prints it, Quantity as its string, IntOrString as a number or a string,
//! RawExtension/FieldsV1/JSON as the JSON they carry, the CRD schema unions); int64 as JSON
//! numbers. A field the table does not know (an object written by a newer Kubernetes) is left
//! out and counted, never guessed. Empty strings in fields the API leaves out when empty are
//! left out; zero numbers and `false` are kept (protobuf cannot tell a pointer set to zero from
//! a zero, and dropping a `replicas: 0` would change the object).
//! Pure functions over bytes from a backup, nesting bounded: a malformed value is `None`,
//! never a panic.

use base64::Engine as _;
use serde_json::{json, Map, Value as Json};

use super::k8s::Envelope;
use super::schema::{schema, Card, Field, Ty};

/// Deeper nesting than any built-in object has (a CRD's schema is the deepest) is refused.
const MAX_DEPTH: usize = 100;

/// One protobuf field's payload.
#[derive(Clone, Copy)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32,
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

/// Every field of a protobuf message, in order; `None` for bytes that are not one.
pub(super) fn fields(mut b: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut out = vec![];
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let f = match tag & 7 {
            0 => Wire::Varint(varint(&mut b)?),
            1 => {
                let (x, rest) = b.split_first_chunk::<8>()?;
                b = rest;
                Wire::Fixed64(u64::from_le_bytes(*x))
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                b = &b[n..];
                Wire::Bytes(v)
            }
            5 => {
                b = b.get(4..)?;
                Wire::Fixed32
            }
            _ => return None,
        };
        out.push((tag >> 3, f));
    }
    Some(out)
}

/// A decoded object, and how many fields of it the schema did not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object as the API's JSON.
    pub json: Json,
    /// Fields left out because the schema table does not know them.
    pub unknown_fields: usize,
}

struct Decoder {
    unknown: usize,
}

/// The object in `e` as the API's JSON; `None` for a kind the schema does not know and for a
/// value that does not decode.
pub fn to_json(e: &Envelope<'_>) -> Option<Json> {
    decode(e).map(|d| d.json)
}

/// As [`to_json`], with the count of fields left out.
pub fn decode(e: &Envelope<'_>) -> Option<Decoded> {
    if !e.content_encoding.is_empty() {
        return None;
    }
    let ty = schema().kind(&e.api_version, &e.kind)?;
    let mut d = Decoder { unknown: 0 };
    let Json::Object(mut o) = d.message(ty, e.raw, 0)? else {
        return None;
    };
    o.insert("apiVersion".into(), json!(e.api_version));
    o.insert("kind".into(), json!(e.kind));
    Some(Decoded {
        json: Json::Object(o),
        unknown_fields: d.unknown,
    })
}

impl Decoder {
    fn message(&mut self, ty: &str, b: &[u8], depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some(special) = special(ty, b, |t, b| self.message(t, b, depth + 1)) {
            return special;
        }
        let spec = schema().message(ty)?;
        let mut o = Map::new();
        for (n, w) in fields(b)? {
            let Some(f) = spec.get(&n) else {
                self.unknown += 1;
                continue;
            };
            match f.card {
                Card::One => {
                    let v = self.value(f.ty, w, depth)?;
                    if f.json == "-" {
                        // A Go struct embedded inline: its fields are this object's.
                        if let Json::Object(inner) = v {
                            o.extend(inner);
                        }
                    } else if f.required || !empty(&v) {
                        o.insert(f.json.to_string(), v);
                    }
                }
                Card::Many => {
                    let list = o.entry(f.json).or_insert_with(|| json!([]));
                    let list = list.as_array_mut()?;
                    match (f.ty, w) {
                        // Packed numbers (Kubernetes writes them unpacked, but both are valid).
                        (Ty::Int, Wire::Bytes(mut p)) => {
                            while !p.is_empty() {
                                list.push(json!(varint(&mut p)? as i64));
                            }
                        }
                        _ => list.push(self.value(f.ty, w, depth)?),
                    }
                }
                Card::Map => {
                    let (k, v) = self.entry(f, w, depth)?;
                    let m = o.entry(f.json).or_insert_with(|| json!({}));
                    m.as_object_mut()?.insert(k, v);
                }
            }
        }
        Some(Json::Object(o))
    }

    fn entry(&mut self, f: &Field, w: Wire<'_>, depth: usize) -> Option<(String, Json)> {
        let Wire::Bytes(b) = w else { return None };
        let (mut k, mut v) = (String::new(), None);
        for (n, x) in fields(b)? {
            match (n, x) {
                (1, Wire::Bytes(s)) => k = std::str::from_utf8(s).ok()?.to_string(),
                (2, x) => v = Some(self.value(f.ty, x, depth)?),
                _ => {}
            }
        }
        let v = match v {
            Some(v) => v,
            None => self.value(f.ty, Wire::Bytes(b""), depth)?,
        };
        Some((k, v))
    }

    fn value(&mut self, ty: Ty, w: Wire<'_>, depth: usize) -> Option<Json> {
        Some(match (ty, w) {
            (Ty::String, Wire::Bytes(b)) => json!(std::str::from_utf8(b).ok()?),
            (Ty::Bytes, Wire::Bytes(b)) => {
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
            (Ty::Bool, Wire::Bytes([])) => json!(false),
            (Ty::Int, Wire::Varint(v)) => json!(v as i64),
            (Ty::Int, Wire::Bytes([])) => json!(0),
            (Ty::Double, Wire::Fixed64(v)) => json!(f64::from_bits(v)),
            (Ty::Double, Wire::Bytes([])) => json!(0.0),
            (Ty::Msg(t), Wire::Bytes(b)) => self.message(t, b, depth + 1)?,
            _ => return None,
        })
    }
}

fn empty(v: &Json) -> bool {
    matches!(v, Json::Null) || v.as_str() == Some("")
}

/// The types whose JSON is not their fields: `Some(result)` for them, `None` for the rest.
fn special(
    ty: &str,
    b: &[u8],
    mut message: impl FnMut(&str, &[u8]) -> Option<Json>,
) -> Option<Option<Json>> {
    let (module, name) = ty.rsplit_once('.')?;
    let meta = module == "apimachinery.pkg.apis.meta.v1";
    let crd = module.starts_with("apiextensions_apiserver.pkg.apis.apiextensions.v1");
    let f = || fields(b);
    let bytes_of = |n: u64| -> Option<Option<&[u8]>> {
        Some(f()?.into_iter().rev().find_map(|(m, w)| match w {
            Wire::Bytes(x) if m == n => Some(x),
            _ => None,
        }))
    };
    let int_of = |n: u64| -> Option<i64> {
        Some(
            f()?.into_iter()
                .rev()
                .find_map(|(m, w)| match w {
                    Wire::Varint(x) if m == n => Some(x as i64),
                    _ => None,
                })
                .unwrap_or(0),
        )
    };
    let schema_of = |message: &mut dyn FnMut(&str, &[u8]) -> Option<Json>, n: u64| {
        let props = format!("{module}.JsonSchemaProps");
        bytes_of(n).map(|x| x.and_then(|x| message(&props, x)))
    };
    Some(match (meta, crd, name) {
        (true, _, "Time") if b.is_empty() => Some(Json::Null),
        (true, _, "Time") => {
            let t = chrono::DateTime::from_timestamp(int_of(1)?, 0)?;
            Some(json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        }
        (true, _, "MicroTime") if b.is_empty() => Some(Json::Null),
        (true, _, "MicroTime") => {
            let nanos = u32::try_from(int_of(2)?).ok()?;
            let t = chrono::DateTime::from_timestamp(int_of(1)?, nanos)?;
            Some(json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
        }
        (true, _, "Duration") => Some(json!(go_duration(int_of(1)?))),
        (true, _, "FieldsV1") => raw_json(bytes_of(1)?),
        _ if ty == "apimachinery.pkg.runtime.RawExtension" => raw_json(bytes_of(1)?),
        _ if module == "apimachinery.pkg.api.resource" => {
            // Quantity and QuantityValue: `{string=1}`.
            let s = bytes_of(1)?.unwrap_or_default();
            Some(json!(std::str::from_utf8(s).ok()?))
        }
        _ if ty == "apimachinery.pkg.util.intstr.IntOrString" => {
            if int_of(1)? == 1 {
                let s = bytes_of(3)?.unwrap_or_default();
                Some(json!(std::str::from_utf8(s).ok()?))
            } else {
                Some(json!(int_of(2)?))
            }
        }
        (_, true, "Json") => raw_json(bytes_of(1)?),
        (_, true, "JsonSchemaPropsOrArray") => match schema_of(&mut message, 1)? {
            Some(s) => Some(s),
            None => {
                let props = format!("{module}.JsonSchemaProps");
                let mut list = vec![];
                for (n, w) in f()? {
                    if let (2, Wire::Bytes(x)) = (n, w) {
                        list.push(message(&props, x)?);
                    }
                }
                Some(Json::Array(list))
            }
        },
        (_, true, "JsonSchemaPropsOrBool") => match schema_of(&mut message, 2)? {
            Some(s) => Some(s),
            None => Some(json!(int_of(1)? != 0)),
        },
        (_, true, "JsonSchemaPropsOrStringArray") => match schema_of(&mut message, 1)? {
            Some(s) => Some(s),
            None => {
                let mut list = vec![];
                for (n, w) in f()? {
                    if let (2, Wire::Bytes(x)) = (n, w) {
                        list.push(json!(std::str::from_utf8(x).ok()?));
                    }
                }
                Some(Json::Array(list))
            }
        },
        _ => return None,
    })
}

/// Raw JSON bytes as JSON; bytes that are not JSON as base64 (never dropped).
fn raw_json(raw: Option<&[u8]>) -> Option<Json> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Some(Json::Null);
    }
    Some(
        serde_json::from_slice(raw)
            .unwrap_or_else(|_| json!(base64::engine::general_purpose::STANDARD.encode(raw))),
    )
}

/// Nanoseconds as Go's `time.Duration.String()` prints them: `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, div) = match u {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(u, div));
    }
    let (h, rest) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = format!("{}s", fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, m) => format!("{sign}{m}m{secs}"),
        (h, m) => format!("{sign}{h}h{m}m{secs}"),
    }
}

/// `v / div` with the fraction's trailing zeros dropped.
fn fraction(v: u64, div: u64) -> String {
    let (whole, part) = (v / div, v % div);
    if part == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{part:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
