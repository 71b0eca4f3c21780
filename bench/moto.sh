#!/usr/bin/env bash
# cpvault to a real S3 server on loopback (moto) against the same backup to a local store,
# in the same run, interleaved; and the peak RSS of a big backup to moto.
#
#   bash bench/make-snapshot.sh && bash bench/moto.sh
#
# Env: REPEAT (3)   runs per measurement; the table shows medians
#      BIG          big input for the RSS run (default bench/cache/big-4g.db; "" skips it)
#      CPVAULT      cpvault binary (default target/release/cpvault, built if missing)
#      SNAPSHOT     snapshot file (default bench/cache/snapshot.db)
# Results: stdout and bench/out/moto.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
REPEAT=${REPEAT:-3}
SNAPSHOT=${SNAPSHOT:-$BENCH_DIR/cache/snapshot.db}
BIG=${BIG-$BENCH_DIR/cache/big-4g.db}
CMDLINE="$(for v in REPEAT BIG CPVAULT SNAPSHOT; do [[ -n "${!v+x}" ]] && printf '%s=%q ' "$v" "${!v}"; done)bash bench/moto.sh"

die() { echo "moto.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }
[[ -s "$SNAPSHOT" ]] || die "no snapshot at $SNAPSHOT; build it first: bash bench/make-snapshot.sh"
command -v moto_server >/dev/null || die "moto_server not found (pip install 'moto[server]')"
[[ -x /usr/bin/time ]] || die "GNU time missing at /usr/bin/time (apt-get install -y time)"
if [[ -z "${CPVAULT:-}" ]]; then
  CPVAULT="$REPO/target/release/cpvault"
  (cd "$REPO" && cargo build --release --quiet) >&2 || die "cargo build --release failed"
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/cpvault-moto-bench.XXXXXX")
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$W/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null && break; sleep 0.2; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true XDG_CONFIG_HOME="$W/config"
recipient=$("$CPVAULT" keygen -o "$W/key.txt" 2>/dev/null)

runs="$W/runs.tsv"
# measure LABEL STORE SOURCE-FLAG INPUT
measure() {
  /usr/bin/time -f '%e %M' -o "$W/t" "$CPVAULT" -q backup --store "$2" --cluster bench \
    -r "$recipient" "$3" "$4" >/dev/null
  read -r wall rss < "$W/t"
  printf '%s\t%s\t%s\n' "$1" "$wall" "$rss" >> "$runs"
  log "$1: ${wall}s, $((rss / 1024)) MiB RSS"
}
for i in $(seq "$REPEAT"); do
  measure "snapshot → local store" "$W/local-$i" --etcd-snapshot-file "$SNAPSHOT"
  measure "snapshot → moto (S3 on loopback)" "s3://bench/run-$i" --etcd-snapshot-file "$SNAPSHOT"
done
if [[ -n "$BIG" && -s "$BIG" ]]; then
  measure "$(( $(stat -c %s "$BIG") / 1073741824 )) GiB input → moto, peak RSS" "s3://bench/big" --file "$BIG"
fi

size=$(stat -c %s "$SNAPSHOT")
mkdir -p "$BENCH_DIR/out"
{
  echo "Measured $(date -u +%F) on $(nproc) cores: \`$CMDLINE\` (snapshot $((size / 1000000)) MB; medians of $REPEAT)."
  echo
  echo "| run | wall | MB/s | peak RSS |"
  echo "| --- | ---: | ---: | ---: |"
  python3 - "$runs" "$size" <<'PY'
import sys, statistics, collections
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, wall, rss = line.rstrip("\n").split("\t")
    runs.setdefault(label, []).append((float(wall), int(rss)))
size = int(sys.argv[2])
for label, rs in runs.items():
    wall = statistics.median(w for w, _ in rs)
    rss = max(r for _, r in rs) / 1024
    mbps = f"{size / wall / 1e6:.0f}" if "snapshot" in label else ""
    print(f"| {label} | {wall:.2f} s | {mbps} | {rss:.0f} MiB |")
PY
} | tee "$BENCH_DIR/out/moto.md"
