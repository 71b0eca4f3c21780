#!/usr/bin/env python3
"""Writes src/inspect/k8s_schema.txt: the protobuf layout of every Kubernetes built-in type,
with the JSON name of each field, for `cpvault get` to turn kube-apiserver's protobuf back
into the API's JSON.

Field numbers and types come from k8s-pb (the kube-rs org's prost types, generated from
Kubernetes' own generated.proto files); JSON names and which fields the API always prints
come from k8s-openapi (generated from Kubernetes' OpenAPI spec). Both crates are read from
cargo's registry source cache (run `cargo fetch` in the repository first; k8s-pb is a
dev-dependency). The output is checked in; run this again after bumping either crate:

    python3 scripts/gen-k8s-schema.py > src/inspect/k8s_schema.txt

Format, one record per line, tab-separated:
    K <apiVersion> <kind> <type>            a kind kube-apiserver stores, and its message
    M <type>                                a message; its fields follow
    F <tag> <json> <card> <scalar|msg> [<type>] <o|r>
        card: 1 single, * repeated, { map with string keys (the value is what follows)
        json `-`: a Go struct embedded inline (its fields are the parent's in JSON)
        o/r: left out when empty / always printed by the API (k8s-openapi's non-Option fields)
Types are named by k8s-pb's module path, e.g. api.apps.v1.Deployment.
"""

import glob
import os
import re
import sys

HOME = os.path.join(os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo"), "registry/src")


def crate_dir(name):
    dirs = sorted(d for d in glob.glob(f"{HOME}/*/{name}") if os.path.isdir(d))
    if not dirs:
        sys.exit(f"{name} not in {HOME}: run `cargo fetch` first")
    return dirs[-1]


def locked(name):
    """The version of `name` that Cargo.lock pins, so the cached sources read are the build's."""
    lock = open(os.path.join(os.path.dirname(__file__), "..", "Cargo.lock"), encoding="utf-8").read()
    m = re.search(r'\[\[package\]\]\nname = "' + re.escape(name) + r'"\nversion = "([^"]+)"', lock)
    if not m:
        sys.exit(f"{name} is not in Cargo.lock")
    return f"{name}-{m.group(1)}"


PB = crate_dir(locked("k8s-pb"))
OA = crate_dir(locked("k8s-openapi"))

STRUCT = re.compile(r"^pub struct (\w+) \{")
ATTR = re.compile(r'^\s*#\[prost\((.*)\)\]')
FIELD = re.compile(r"^\s*pub (?:r#)?(\w+): (.*),$")
TAG = re.compile(r'tag = "(\d+)"')
RESOURCE = re.compile(r"^impl crate::Resource for (\w+) \{")
API_VERSION = re.compile(r'const API_VERSION: &\'static str = "([^"]*)"')
KIND = re.compile(r'const KIND: &\'static str = "([^"]*)"')


def resolve(module, rust_type):
    """The k8s-pb type a field refers to, as a dotted path."""
    t = rust_type
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    if t.startswith("::prost::alloc::collections::BTreeMap<"):
        t = t[len("::prost::alloc::collections::BTreeMap<"):-1]
        t = t.split(", ", 1)[1]
        return resolve(module, t)
    parts = t.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        mod.pop()
        parts.pop(0)
    if parts and parts[0] == "crate":
        mod = []
        parts.pop(0)
    return ".".join(mod + parts)


def pb_messages():
    """{type: [(tag, rust_name, card, scalar, target)]}, [(apiVersion, kind, type)]."""
    messages, kinds = {}, []
    for path in sorted(glob.glob(f"{PB}/src/**/mod.rs", recursive=True)):
        module = os.path.relpath(os.path.dirname(path), f"{PB}/src").split(os.sep)
        cur, attr, res, pending = None, None, None, None
        for line in open(path, encoding="utf-8"):
            m = STRUCT.match(line)
            if m:
                cur = ".".join(module + [m.group(1)])
                messages[cur] = []
                continue
            if line.startswith("}"):
                cur = None
                continue
            m = RESOURCE.match(line)
            if m:
                res = [m.group(1), None, None]
                continue
            if res:
                m = API_VERSION.search(line)
                if m:
                    res[1] = m.group(1)
                m = KIND.search(line)
                if m:
                    res[2] = m.group(1)
                    kinds.append((res[1], res[2], ".".join(module + [res[0]])))
                    res = None
                continue
            if cur is None:
                continue
            m = ATTR.match(line)
            if m:
                attr = m.group(1)
                continue
            if attr and (pending or line.lstrip().startswith("pub ")):
                # rustfmt may spread a long field over several lines: join them.
                pending = (pending + " " if pending else "") + line.strip()
                if pending.count("<") != pending.count(">") or not pending.endswith(","):
                    continue
                line = "    " + pending.replace("< ", "<").replace(" >", ">").replace(",>", ">")
                pending = None
            m = FIELD.match(line)
            if m and attr:
                tag = int(TAG.search(attr).group(1))
                kind = attr.split(",")[0].strip()
                if kind.startswith("btree_map") or kind.startswith("map"):
                    value = attr.split('"')[1].split(", ")[1]
                    card = "{"
                    scalar = "msg" if value == "message" else value
                elif "repeated" in attr:
                    card, scalar = "*", kind
                else:
                    card, scalar = "1", kind
                if scalar.startswith("bytes"):
                    scalar = "bytes"
                if scalar == "message":
                    scalar = "msg"
                target = resolve(module, m.group(2)) if scalar == "msg" else ""
                messages[cur].append((tag, m.group(1), card, scalar, target))
                attr = None
    return messages, kinds


OA_KEY = re.compile(r'^\s*"([^"]+)" => Field::Key_(\w+),')
OA_FIELD = re.compile(r"^\s*pub (?:r#)?(\w+): (.*),$")


def oa_types():
    """{(module path, lowercased type name): {rust_name: (json, required)}}: v1_33 (the
    Kubernetes version k8s-pb 0.8 was generated from) first, then the newer ones."""
    out = {}
    versions = sorted(glob.glob(f"{OA}/src/v1_*"), key=lambda p: int(p.rsplit("_", 1)[1]))
    versions.sort(key=lambda p: not p.endswith("v1_33"))
    for vdir in versions:
        for path in glob.glob(f"{vdir}/**/*.rs", recursive=True):
            module = os.path.relpath(os.path.dirname(path), vdir).split(os.sep)
            text = open(path, encoding="utf-8").read().splitlines()
            name, required, names = None, {}, {}
            in_struct = False
            for line in text:
                m = STRUCT.match(line)
                if m and name is None:
                    name, in_struct = m.group(1), True
                    continue
                if in_struct:
                    if line.startswith("}"):
                        in_struct = False
                        continue
                    m = OA_FIELD.match(line)
                    if m:
                        required[m.group(1)] = not m.group(2).startswith("Option<")
                    continue
                m = OA_KEY.match(line)
                if m:
                    names[m.group(2)] = m.group(1)
            if name:
                key = (".".join(module), name.lower())
                if key not in out:
                    out[key] = {r: (names.get(r), required.get(r, False)) for r in required}
    return out


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def squash(s):
    return s.replace("_", "").lower()


def main():
    messages, kinds = pb_messages()
    oa = oa_types()
    unnamed = 0
    print("# Generated by scripts/gen-k8s-schema.py from "
          f"{os.path.basename(PB)} and {os.path.basename(OA)}; do not edit.")
    for api_version, kind, ty in sorted(kinds):
        print(f"K\t{api_version}\t{kind}\t{ty}")
    for ty in sorted(messages):
        module, name = ty.rsplit(".", 1)
        known = oa.get((module, name.lower()), {})
        if not known and module.endswith("apiextensions.v1beta1"):
            # Gone from the OpenAPI spec, named as its v1 successor.
            known = oa.get((module[: -len("beta1")], name.lower()), {})
        by_squash = {squash(r): v for r, v in known.items()}
        print(f"M\t{ty}")
        for tag, rust, card, scalar, target in messages[ty]:
            json, required = known.get(rust) or by_squash.get(squash(rust)) or (None, False)
            if json is None and known and scalar == "msg" and card == "1":
                # A Go struct embedded with `json:",inline"` (Volume's VolumeSource, Probe's
                # ProbeHandler, …): its own message in protobuf, its fields the parent's in JSON.
                json = "-"
            elif json is None and rust == "ref" and ty.endswith(".JsonSchemaProps"):
                json = "$ref"
            elif json is None:
                json = camel(rust)
                unnamed += known != {}
                if known and os.environ.get("SHOW_GUESSES"):
                    print(f"guessed {ty}.{rust} as {json}", file=sys.stderr)
            req = "r" if required else "o"
            print(f"F\t{tag}\t{json}\t{card}\t{scalar}\t{target}\t{req}")
    print(f"{len(kinds)} kinds, {len(messages)} messages, {unnamed} fields of known types "
          "named by guess", file=sys.stderr)


main()
