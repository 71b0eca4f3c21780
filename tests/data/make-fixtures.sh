#!/usr/bin/env bash
# Regenerates the checked-in fixtures: a format-v1 sample store (proof that every version
# ever written stays readable) and corrupted copies of it, one per failure case. Run from the
# repository root after `cargo build`; the results are committed, so this runs only when a
# new format version or fixture is added.
set -euo pipefail
bin=${CPVAULT:-target/debug/cpvault}
root=tests/data
v1=$root/v1
rm -rf "$v1" "$root/corrupt"
mkdir -p "$v1/input/pki/etcd"
export XDG_CONFIG_HOME=/nonexistent
"$bin" keygen -q -o "$v1/key.txt" > "$v1/recipient.txt"
"$bin" keygen -q -o "$v1/wrong-key.txt" > /dev/null
python3 - "$v1/input" <<'PY'
import hashlib, os, sys
d = sys.argv[1]
db = bytes((i * 131) % 253 for i in range(4 * 4096))
open(f"{d}/snapshot.db", "wb").write(db + hashlib.sha256(db).digest())
for rel, mode, text in [("pki/ca.crt", 0o644, "CERT\n" * 40), ("pki/ca.key", 0o600, "KEY\n" * 60),
                        ("pki/etcd/ca.key", 0o600, "ETCDKEY\n" * 30)]:
    open(f"{d}/{rel}", "w").write(text)
    os.chmod(f"{d}/{rel}", mode)
PY
ref=$("$bin" backup -q --store "$v1/store" --cluster sample -r "$(cat "$v1/recipient.txt")" \
  --etcd-snapshot-file "$v1/input/snapshot.db" --pki-dir "$v1/input/pki" --tag fixture=v1)
echo "$ref" > "$v1/reference.txt"
archive="$ref.tar.zst.age"
manifest="$ref.manifest.json"
make_case() { mkdir -p "$root/corrupt/$1"; cp -r "$v1/store/." "$root/corrupt/$1/"; }
make_case truncated
python3 -c "import sys;p=sys.argv[1];b=open(p,'rb').read();open(p,'wb').write(b[:len(b)*2//3])" "$root/corrupt/truncated/$archive"
make_case bit-flipped
python3 -c "import sys;p=sys.argv[1];b=bytearray(open(p,'rb').read());b[len(b)//2]^=0x10;open(p,'wb').write(b)" "$root/corrupt/bit-flipped/$archive"
make_case trailing-garbage
printf 'garbage after the end' >> "$root/corrupt/trailing-garbage/$archive"
make_case edited-manifest
python3 - "$root/corrupt/edited-manifest/$manifest" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["tags"]["fixture"] = "edited"; m["created"] = "2020-01-01T00:00:00Z"
open(p, "w").write(json.dumps(m, indent=2))
PY
make_case future-version
python3 - "$root/corrupt/future-version/$manifest" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["version"] = 2
open(p, "w").write(json.dumps(m, indent=2))
PY
echo "fixtures written under $root"
