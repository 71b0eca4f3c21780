#!/usr/bin/env bash
# cpvault benchmark: backup/verify of the cached etcd snapshot + a fake PKI dir, against
# tar|zstd|age, restic and borg doing the same work, plus a memory test on a big input.
#
#   bash bench/make-snapshot.sh && bash bench/run.sh
#
# Env: REPEAT (3)      runs per measurement; the table shows medians
#      BIG_GB (4)      size of the memory-test input in GiB (0 skips it)
#      CPVAULT         cpvault binary (default target/release/cpvault, built if missing)
#      SNAPSHOT        snapshot file (default bench/cache/snapshot.db)
#      RESTIC (auto)   0 skips restic;  RESTIC_CHECK (1): 0 skips `restic check --read-data`
#      BORG (auto)     0 skips borg;    BORG_CHECK (1):   0 skips `borg check --verify-data`
#      BIG_BASELINE (1) 0 skips tar|zstd|age on the big input
#      BENCH_TMP       where stores/repos go (default ${TMPDIR:-/tmp}); removed at exit
# Results: stdout and bench/out/results.md (raw runs in bench/out/runs.tsv).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR="$BENCH_DIR/out"
CACHE_DIR="$BENCH_DIR/cache"

case "${1:-}" in
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "run.sh: takes no arguments, only env knobs (try --help)" >&2; exit 2 ;;
esac

# The exact command line, with the knobs that were set.
CMDLINE=""
for v in REPEAT BIG_GB CPVAULT SNAPSHOT RESTIC RESTIC_CHECK BORG BORG_CHECK BIG_BASELINE BENCH_TMP; do
  [[ -n "${!v+x}" ]] && CMDLINE+="$v=$(printf '%q' "${!v}") "
done
CMDLINE+="bash bench/run.sh"

REPEAT=${REPEAT:-3}
BIG_GB=${BIG_GB:-4}
SNAPSHOT=${SNAPSHOT:-$CACHE_DIR/snapshot.db}
RESTIC=${RESTIC:-auto}
RESTIC_CHECK=${RESTIC_CHECK:-1}
BORG=${BORG:-auto}
BORG_CHECK=${BORG_CHECK:-1}
BIG_BASELINE=${BIG_BASELINE:-1}

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

[[ -s "$SNAPSHOT" ]] || die "no snapshot at $SNAPSHOT; build it first: bash bench/make-snapshot.sh"
[[ -x /usr/bin/time ]] || die "GNU time missing at /usr/bin/time (apt-get install -y time)"
for t in age age-keygen zstd tar sha256sum python3; do
  command -v "$t" >/dev/null || die "'$t' not found; install it (Debian: apt-get install -y age zstd tar coreutils python3)"
done
if [[ $RESTIC == auto ]]; then command -v restic >/dev/null && RESTIC=1 || RESTIC=0; fi
if [[ $BORG == auto ]]; then command -v borg >/dev/null && BORG=1 || BORG=0; fi
[[ $RESTIC == 1 ]] && { command -v restic >/dev/null || die "restic not found (apt-get install -y restic, or RESTIC=0)"; }
[[ $BORG == 1 ]] && { command -v borg >/dev/null || die "borg not found (apt-get install -y borgbackup, or BORG=0)"; }

if [[ -z "${CPVAULT:-}" ]]; then
  CPVAULT="$REPO/target/release/cpvault"
  if [[ ! -x "$CPVAULT" ]]; then
    log "building cpvault (cargo build --release)"
    (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed"
  fi
fi
[[ -x "$CPVAULT" ]] || die "CPVAULT=$CPVAULT is not an executable"

W=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT_DIR"

# ---- inputs -------------------------------------------------------------------------------
# Fake kubeadm PKI: 22 PEM-looking files, keys 0600, certs 0644.
PKI="$W/in/pki"
mkdir -p "$PKI/etcd"
pem() { # FILE TYPE BYTES MODE
  { echo "-----BEGIN $2-----"; head -c "$3" /dev/urandom | base64 -w 64; echo "-----END $2-----"; } > "$1"
  chmod "$4" "$1"
}
for n in ca apiserver apiserver-kubelet-client apiserver-etcd-client front-proxy-ca front-proxy-client \
         etcd/ca etcd/server etcd/peer etcd/healthcheck-client; do
  pem "$PKI/$n.crt" CERTIFICATE 900 0644
  pem "$PKI/$n.key" "RSA PRIVATE KEY" 1190 0600
done
pem "$PKI/sa.key" "RSA PRIVATE KEY" 1190 0600
pem "$PKI/sa.pub" "PUBLIC KEY" 294 0644
PKI_FILES=$(find "$PKI" -type f | wc -l)
PKI_BYTES=$(find "$PKI" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')
SNAP_BYTES=$(stat -L -c %s "$SNAPSHOT")
SMALL_BYTES=$((SNAP_BYTES + PKI_BYTES))

# Memory-test input: the snapshot's pages cycled at shifting offsets with 1 MiB random blocks
# (~6%) in between, BIG_GB GiB, plus an etcd-style sha256 trailer so it looks like a snapshot.
BIG=""
if [[ "$BIG_GB" != 0 ]]; then
  BIG="$CACHE_DIR/big-${BIG_GB}g.db"; mkdir -p "$CACHE_DIR"
  if [[ ! -s "$BIG" ]]; then
    log "generating $BIG (once)"
    python3 - "$SNAPSHOT" "$BIG" "$BIG_GB" <<'PY'
import hashlib, os, sys
src, dst, gb = sys.argv[1], sys.argv[2], float(sys.argv[3])
total = int(gb * 2**30) // 4096 * 4096
MiB = 2**20
snap = open(src, "rb")
ssize = os.fstat(snap.fileno()).st_size - 32
seg = 15 * MiB
if ssize < seg + 4096:
    sys.exit("snapshot too small for the big input (need > 15 MiB)")
h = hashlib.sha256()
tmp = dst + ".tmp"
with open(tmp, "wb") as out:
    written, k = 0, 0
    while written < total:
        off = 0 if k == 0 else (k * 7 * MiB + k * 4096) % (ssize - seg) // 4096 * 4096
        snap.seek(off)
        for chunk in (snap.read(seg), os.urandom(MiB)):
            chunk = chunk[: total - written]
            out.write(chunk); h.update(chunk); written += len(chunk)
        k += 1
    out.write(h.digest())
os.replace(tmp, dst)
PY
  fi
  BIG_BYTES=$(( $(stat -c %s "$BIG") + PKI_BYTES ))
fi

# ---- key ----------------------------------------------------------------------------------
KEY="$W/key.txt"
if RCPT=$("$CPVAULT" keygen -o "$KEY" 2>"$W/keygen.err" | grep -o 'age1[0-9a-z]*' | tail -n1) && [[ -n "$RCPT" ]]; then
  KEYGEN="cpvault keygen"
else
  log "cpvault keygen failed ($(head -c 200 "$W/keygen.err")); using age-keygen"
  rm -f "$KEY"; age-keygen -o "$KEY" 2>/dev/null; RCPT=$(age-keygen -y "$KEY"); KEYGEN="age-keygen"
fi

export CPVAULT KEY RCPT PKI_PARENT="$W/in"
export RESTIC_PASSWORD="cpvault-bench" BORG_PASSPHRASE="cpvault-bench"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# ---- measuring ----------------------------------------------------------------------------
RUNS="$W/runs.tsv"
printf 'phase\ttool\trun\tstatus\twall_s\trss_kib\tinput_bytes\toutput_bytes\n' > "$RUNS"
FAILED=0

# measure PHASE TOOL RUN INPUT_BYTES OUTPUT_PATH SNIPPET
# Runs SNIPPET with bash under GNU time. Pipeline stages prefixed with $T record their own
# peak RSS; for those the reported RSS is the sum of the stages' peaks (they run at once).
measure() {
  local phase=$1 tool=$2 run=$3 bytes=$4 outpath=$5 snippet=$6
  local tf="$W/time.txt" rf="$W/stage-rss.txt" lg="$W/cmd.log" status=ok wall rss out=""
  rm -f "$tf"; : > "$rf"
  sync
  T="/usr/bin/time -f %M -a -o $rf" /usr/bin/time -f '%e %M' -o "$tf" bash -o pipefail -c "$snippet" \
    >"$lg" 2>&1 || status=FAIL
  read -r wall rss < <(grep -E '^[0-9.]+ [0-9]+$' "$tf" | tail -n1) || { wall=NaN; rss=0; }
  if grep -qE '^[0-9]+$' "$rf"; then rss=$(awk '/^[0-9]+$/ {s+=$1} END {print s}' "$rf"); fi
  [[ -n "$outpath" && -e "$outpath" ]] && out=$(du -sb "$outpath" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$tool" "$run" "$status" "$wall" "$rss" "$bytes" "$out" >> "$RUNS"
  if [[ $status == ok ]]; then
    log "$phase | $tool | run $run: ${wall}s, $((rss / 1024)) MiB RSS"
  else
    FAILED=1
    log "$phase | $tool | run $run: FAILED; output:"; tail -n 5 "$lg" | sed 's/^/    /' >&2
  fi
  [[ $status == ok ]]
}

# One full round of backup+verify for every tool on one input.
# round LABEL RUN INPUT_FILE INPUT_BYTES WITH_OTHERS(0/1) WITH_BASELINE(0/1)
round() {
  local label=$1 run=$2 input=$3 bytes=$4 others=$5 baseline=$6
  local d="$W/run" ref
  export IN_DIR IN_NAME DEST
  IN_DIR=$(dirname "$input"); IN_NAME=$(basename "$input")
  cat "$input" > /dev/null   # warm page cache: every tool reads from memory

  rm -rf "$d"; mkdir -p "$d/store"; DEST="$d/store"
  if measure "backup ($label)" cpvault "$run" "$bytes" "$DEST" \
      '"$CPVAULT" -q backup --store "$DEST" --cluster bench -r "$RCPT" --etcd-snapshot-file "$IN_DIR/$IN_NAME" --pki-dir "$PKI_PARENT/pki" > "$DEST.ref"'; then
    ref=$(tail -n1 "$DEST.ref")
    [[ -n "$ref" ]] || log "cpvault backup printed no ref"
    measure "verify ($label)" cpvault "$run" "$bytes" "" \
      '"$CPVAULT" -q verify --store "$DEST" -i "$KEY" "$(tail -n1 "$DEST.ref")"' || true
  else
    printf '%s\t%s\t%s\tFAIL\tNaN\t0\t%s\t\n' "verify ($label)" cpvault "$run" "$bytes" >> "$RUNS"
  fi

  if [[ $baseline == 1 ]]; then
    rm -rf "$d"; mkdir -p "$d"; DEST="$d/out.tar.zst.age"
    if measure "backup ($label)" "tar | zstd -3 -T0 | age" "$run" "$bytes" "$DEST" \
        '$T tar -c -C "$IN_DIR" "$IN_NAME" -C "$PKI_PARENT" pki | $T zstd -3 -T0 -q | $T age -r "$RCPT" > "$DEST"'; then
      measure "verify ($label)" "age -d | zstd -d | sha256sum" "$run" "$bytes" "" \
        '$T age -d -i "$KEY" "$DEST" | $T zstd -d -q | $T sha256sum' || true
    fi
    # The same with the output made durable, as cpvault's local store does (fsync before the
    # manifest commits): the like-for-like comparison.
    rm -rf "$d"; mkdir -p "$d"; DEST="$d/out.tar.zst.age"
    measure "backup ($label)" "tar | zstd -3 -T0 | age; sync FILE" "$run" "$bytes" "$DEST" \
      '$T tar -c -C "$IN_DIR" "$IN_NAME" -C "$PKI_PARENT" pki | $T zstd -3 -T0 -q | $T age -r "$RCPT" > "$DEST" && sync "$DEST"' || true
  fi

  if [[ $others == 1 && $RESTIC == 1 ]]; then
    rm -rf "$d"; mkdir -p "$d"; DEST="$d/restic"
    export RESTIC_CACHE_DIR="$d/restic-cache"
    restic init -q --repo "$DEST" --repository-version 2 >/dev/null || log "restic init failed"
    if measure "backup ($label)" "restic backup" "$run" "$bytes" "$DEST" \
        'restic -q --repo "$DEST" backup "$IN_DIR/$IN_NAME" "$PKI_PARENT/pki"' && [[ $RESTIC_CHECK == 1 ]]; then
      measure "verify ($label)" "restic check --read-data" "$run" "$bytes" "" \
        'restic -q --repo "$DEST" check --read-data' || true
    fi
  fi

  if [[ $others == 1 && $BORG == 1 ]]; then
    rm -rf "$d"; mkdir -p "$d"; DEST="$d/borg"
    export BORG_BASE_DIR="$d/borg-home"
    borg init -e repokey "$DEST" >/dev/null 2>&1 || log "borg init failed"
    if measure "backup ($label)" "borg create zstd,3" "$run" "$bytes" "$DEST" \
        'borg create --compression zstd,3 "$DEST::bench" "$IN_DIR/$IN_NAME" "$PKI_PARENT/pki"' && [[ $BORG_CHECK == 1 ]]; then
      measure "verify ($label)" "borg check --verify-data" "$run" "$bytes" "" \
        'borg check --verify-data "$DEST"' || true
    fi
  fi
  rm -rf "$d"
}

log "snapshot $SNAPSHOT ($SNAP_BYTES bytes) + $PKI_FILES PKI files; REPEAT=$REPEAT; cpvault=$CPVAULT; key from $KEYGEN"
for i in $(seq "$REPEAT"); do
  round "snapshot+pki" "$i" "$SNAPSHOT" "$SMALL_BYTES" 1 1
done
if [[ -n "$BIG" ]]; then
  for i in $(seq "$REPEAT"); do
    round "${BIG_GB} GiB+pki" "$i" "$BIG" "$BIG_BYTES" 0 "$BIG_BASELINE"
  done
fi

# ---- report -------------------------------------------------------------------------------
ver() { "$@" 2>&1 | head -n1 || true; }
export CMDLINE SNAPSHOT SNAP_BYTES PKI_FILES PKI_BYTES REPEAT BIG BIG_GB KEYGEN
export M_NPROC=$(nproc)
export M_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export M_MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
export M_KERNEL=$(uname -sr)
export V_CPVAULT=$(ver "$CPVAULT" --version) V_AGE=$(ver age --version)
export V_ZSTD="zstd $(zstd --version 2>&1 | grep -o 'v[0-9.]*' | head -n1)"
export V_TAR=$(ver tar --version) V_RESTIC=$([[ $RESTIC == 1 ]] && ver restic version | cut -d' ' -f1-2 || echo "restic skipped")
export V_BORG=$([[ $BORG == 1 ]] && ver borg --version || echo "borg skipped")
export SNAP_INFO=$(grep -m1 '^keys:' "$SNAPSHOT.info" 2>/dev/null || true)

cp "$RUNS" "$OUT_DIR/runs.tsv"
python3 - "$RUNS" > "$OUT_DIR/results.md" <<'PY'
import csv, os, statistics, sys
from datetime import datetime, timezone
e = os.environ
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["phase"], r["tool"]), []).append(r)
def med(xs):
    return statistics.median(xs) if xs else None
out = []
p = out.append
p("# cpvault benchmark results\n")
p("- date: %s" % datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
p("- machine: %s CPUs (nproc), %s, %s RAM, %s" % (e["M_NPROC"], e["M_CPU"], e["M_MEM"], e["M_KERNEL"]))
p("- snapshot: `%s`, %d bytes (%.1f MiB)%s" % (e["SNAPSHOT"], int(e["SNAP_BYTES"]), int(e["SNAP_BYTES"]) / 2**20,
                                              ("; " + e["SNAP_INFO"]) if e.get("SNAP_INFO") else ""))
p("- PKI: %s files, %s bytes (modes 0600/0644)" % (e["PKI_FILES"], e["PKI_BYTES"]))
if e.get("BIG"):
    p("- memory-test input: `%s` (%s GiB, snapshot pages + ~6%% random blocks)" % (e["BIG"], e["BIG_GB"]))
p("- tools: cpvault `%s`, %s, %s, %s, %s, %s" % (e["V_CPVAULT"], e["V_AGE"] and "age " + e["V_AGE"],
                                          e["V_ZSTD"], e["V_TAR"], e["V_RESTIC"], e["V_BORG"]))
p("- key: %s (X25519, one recipient); repetitions: %s, medians shown" % (e["KEYGEN"], e["REPEAT"]))
p("- command: `%s`\n" % e["CMDLINE"])
p("| phase | tool | input MB | wall s | MB/s | peak RSS MiB | output MiB | ok/runs | wall s, all runs |")
p("|---|---|--:|--:|--:|--:|--:|--:|---|")
for (phase, tool), rs in groups.items():
    ok = [r for r in rs if r["status"] == "ok"]
    nbytes = int(rs[0]["input_bytes"])
    walls = [float(r["wall_s"]) for r in ok]
    w = med(walls)
    rss = med([int(r["rss_kib"]) for r in ok])
    outs = [int(r["output_bytes"]) for r in ok if r["output_bytes"]]
    o = med(outs)
    p("| %s | %s | %.0f | %s | %s | %s | %s | %d/%d | %s |" % (
        phase, tool.replace("|", "\\|"), nbytes / 1e6,
        "%.2f" % w if w is not None else "FAIL",
        "%.0f" % (nbytes / 1e6 / w) if w else "-",
        "%.0f" % (rss / 1024) if rss is not None else "-",
        "%.0f" % (o / 2**20) if o is not None else "",
        len(ok), len(rs),
        " ".join("%.2f" % float(r["wall_s"]) if r["status"] == "ok" else "FAIL" for r in rs)))
p("")
p("Notes: MB = 10^6 bytes; MB/s = input bytes / median wall time; warm page cache (inputs are read")
p("once before each round); a fresh store/repo/output per run. Peak RSS from GNU time `%M`; for")
p("pipelines it is the sum of each stage's peak. restic (repo v2, compression auto) and borg")
p("(repokey, zstd,3) also chunk and deduplicate; their verify rows are `check --read-data` /")
p("`check --verify-data`. The baseline verify hashes the decrypted tar stream only.")
print("\n".join(out))
PY
echo
cat "$OUT_DIR/results.md"
log "written: $OUT_DIR/results.md and $OUT_DIR/runs.tsv"
exit $FAILED
