//! `cpvault get REF KEY | --prefix P`: values at a backup's revision, read from the store
//! with no restore. JSON values print as stored (or cleaned, or as YAML); protobuf values of
//! every built-in kind are decoded into their JSON (`inspect::objects`); a value that does not
//! decode is named by its envelope's apiVersion and kind, and `--format raw` hands one key's
//! stored bytes to another tool. Values come from a backup that may be hostile: text is
//! escaped for the terminal, and raw bytes never go to one.

use std::fmt::Write as _;
use std::io::IsTerminal;

use base64::Engine as _;
use serde_json::{json, Value as Json};

use super::Ctx;
use crate::cli::{GetArgs, ValueFormat};
use crate::error::Usage;
use crate::inspect::k8s::{self, Stored};
use crate::inspect::mvcc::Wants;
use crate::inspect::objects;
use crate::text::escape_for_line;

/// Runs the command.
///
/// # Errors
/// As `inspect`'s; a key that is not live in the backup; a protobuf value asked for as
/// JSON or YAML; `--format raw` with several keys or to a terminal.
pub async fn run(ctx: &Ctx, args: GetArgs) -> anyhow::Result<()> {
    let (selector, exact) = match (&args.key, &args.prefix) {
        (Some(k), _) => (k.clone(), true),
        (None, Some(p)) => (p.clone(), false),
        (None, None) => return Err(Usage("give a KEY or --prefix PREFIX".into()).into()),
    };
    let raw = args.format == ValueFormat::Raw && !ctx.json();
    if raw && !exact {
        return Err(Usage(
            "--format raw writes the bytes of one key; give KEY instead of --prefix".into(),
        )
        .into());
    }
    if raw && std::io::stdout().is_terminal() {
        return Err(Usage("--format raw writes stored bytes, which may hold control characters: redirect stdout to a file or a pipe".into()).into());
    }
    let sel = selector.clone().into_bytes();
    let wants = Wants {
        digests: false,
        values: Some(Box::new(move |k: &[u8]| {
            if exact {
                k == sel.as_slice()
            } else {
                k.starts_with(&sel)
            }
        })),
    };
    let (m, snap) = super::inspect::open_snapshot(
        ctx,
        &args.store,
        &args.trust,
        &args.identity,
        &args.reference,
        wants,
    )
    .await?;
    let backup = m.reference();
    if exact && snap.values.is_empty() {
        anyhow::bail!(
            "{} is not a live key in {backup} (revision {}); `cpvault inspect` shows what it holds, `get --prefix` lists keys under a prefix",
            escape_for_line(&selector, 200),
            snap.revision
        );
    }
    if raw {
        return super::print_bytes(&snap.values[0].1);
    }
    let record = |k: &[u8]| {
        snap.keys
            .binary_search_by(|(key, _)| key.as_slice().cmp(k))
            .ok()
            .map(|i| &snap.keys[i].1)
    };
    let mut unknown = Unknown::default();
    if ctx.json() {
        let mut items = vec![];
        for (k, v) in &snap.values {
            let r = record(k);
            let mut item = json!({
                "key": String::from_utf8_lossy(k),
                "mod_revision": r.map(|r| r.revision.main),
                "create_revision": r.map(|r| r.create_revision),
                "version": r.map(|r| r.version),
                "lease": r.map(|r| r.lease),
            });
            let (encoding, extra) = match k8s::classify(v) {
                Stored::Json(mut j) => {
                    if args.clean {
                        k8s::clean(&mut j);
                    }
                    ("json", json!({ "value": j }))
                }
                Stored::Protobuf(e) => match decoded(&e, k, &mut unknown) {
                    Some(mut j) => {
                        if args.clean {
                            k8s::clean(&mut j);
                        }
                        ("protobuf", json!({ "value": j }))
                    }
                    None => (
                        "protobuf",
                        json!({"api_version": e.api_version, "kind": e.kind, "value_base64": b64(v)}),
                    ),
                },
                Stored::Opaque => ("bytes", json!({ "value_base64": b64(v) })),
            };
            item["encoding"] = json!(encoding);
            if let (Json::Object(o), Json::Object(x)) = (&mut item, extra) {
                o.extend(x);
            }
            items.push(item);
        }
        unknown.warn(ctx);
        return super::print_json(
            &json!({"backup": backup, "revision": snap.revision, "keys": items}),
        );
    }
    let tty = std::io::stdout().is_terminal();
    let mut t = String::new();
    for (k, v) in &snap.values {
        let key = escape_for_line(&String::from_utf8_lossy(k), 1000);
        if !exact {
            if args.format == ValueFormat::Yaml {
                t.push_str("---\n");
            }
            writeln!(t, "# {key}")?;
        }
        let stored = k8s::classify(v);
        let decoded = match &stored {
            Stored::Protobuf(e) => decoded(e, k, &mut unknown),
            _ => None,
        };
        if let Some(mut j) = decoded {
            // A protobuf object the reader knows: JSON (or YAML) made from its fields.
            if args.clean {
                k8s::clean(&mut j);
            }
            match args.format {
                ValueFormat::Yaml => t.push_str(&serde_saphyr::to_string(&j)?),
                _ => {
                    t.push_str(&for_terminal(&serde_json::to_string_pretty(&j)?, tty));
                    t.push('\n');
                }
            }
            continue;
        }
        match stored {
            Stored::Json(mut j) => match args.format {
                ValueFormat::Yaml => {
                    if args.clean {
                        k8s::clean(&mut j);
                    }
                    t.push_str(&serde_saphyr::to_string(&j)?);
                }
                _ if args.clean => {
                    k8s::clean(&mut j);
                    t.push_str(&for_terminal(&serde_json::to_string_pretty(&j)?, tty));
                    t.push('\n');
                }
                // As stored, byte for byte.
                _ => {
                    t.push_str(&for_terminal(&String::from_utf8_lossy(v), tty));
                    if !v.ends_with(b"\n") {
                        t.push('\n');
                    }
                }
            },
            Stored::Protobuf(e) => {
                let what = format!(
                    "{} {}, stored as protobuf ({} bytes)",
                    escape_for_line(&e.api_version, 100),
                    escape_for_line(&e.kind, 100),
                    v.len()
                );
                if exact {
                    anyhow::bail!(
                        "{key} is a {what} that cpvault cannot decode (a kind unknown to its Kubernetes 1.33 schema, or a damaged value) — `--format raw` writes the stored bytes (e.g. for `auger decode`), `--output json` gives them as base64"
                    );
                }
                writeln!(t, "# {what}; not decoded (see `get KEY --format raw`)")?;
            }
            Stored::Opaque => match std::str::from_utf8(v) {
                Ok(s) => writeln!(t, "{}", escape_for_line(s, usize::MAX))?,
                Err(_) => writeln!(
                    t,
                    "# {} bytes, not text (see `get KEY --format raw`)",
                    v.len()
                )?,
            },
        }
    }
    unknown.warn(ctx);
    if t.is_empty() {
        if !ctx.quiet {
            crate::say!(
                "no live key under {} in {backup} (revision {})",
                escape_for_line(&selector, 200),
                snap.revision
            );
        }
        return Ok(());
    }
    super::print_text(&t)
}

/// Fields left out because cpvault's schema table (Kubernetes 1.33) does not know them
/// (written by a newer Kubernetes), counted over every key and told once.
#[derive(Default)]
struct Unknown {
    keys: usize,
    fields: usize,
    /// The first key with such fields, and its kind.
    first: Option<(String, String)>,
}

impl Unknown {
    fn warn(&self, ctx: &Ctx) {
        let Some((key, kind)) = self.first.as_ref().filter(|_| !ctx.quiet) else {
            return;
        };
        let fix = "`--format raw` has every stored byte";
        if self.keys == 1 {
            crate::say!(
                "warning: {key}: {} field(s) of this {kind} unknown to cpvault's Kubernetes 1.33 schema were left out ({fix})",
                self.fields
            );
        } else {
            crate::say!(
                "warning: {} keys had fields unknown to cpvault's Kubernetes 1.33 schema ({} in all), left out; the first is {key}, a {kind} ({fix})",
                self.keys,
                self.fields
            );
        }
    }
}

/// A protobuf object as the API's JSON, counting fields unknown to cpvault's schema table
/// into `unknown`.
fn decoded(e: &k8s::Envelope<'_>, key: &[u8], unknown: &mut Unknown) -> Option<serde_json::Value> {
    let d = objects::decode(e)?;
    if d.unknown_fields > 0 {
        unknown.keys += 1;
        unknown.fields += d.unknown_fields;
        unknown.first.get_or_insert_with(|| {
            (
                escape_for_line(&String::from_utf8_lossy(key), 200),
                escape_for_line(&e.kind, 100),
            )
        });
    }
    Some(d.json)
}

/// JSON text as it is, or with C1 control characters escaped when it goes to a terminal
/// (JSON holds no raw controls below 0x20, but may hold those).
fn for_terminal(s: &str, tty: bool) -> String {
    if tty
        && s.chars()
            .any(|c| c.is_control() && !c.is_ascii_whitespace())
    {
        escape_for_line(s, usize::MAX)
    } else {
        s.to_string()
    }
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}
