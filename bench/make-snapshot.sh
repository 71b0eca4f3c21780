#!/usr/bin/env bash
# Build a realistic etcd snapshot once and cache it at bench/cache/snapshot.db.
#
#   bash bench/make-snapshot.sh [--force]
#
# Starts a throwaway etcd on free 127.0.0.1 ports in a temp data dir, loads ~SNAPSHOT_MB MiB of
# Kubernetes-like keys through the JSON gRPC gateway (bench/etcd_load.py: batched txns, a few
# connections), overwrites a fraction of them so the db has history, then `etcdctl snapshot save`.
# Env: SNAPSHOT_MB (default 1024), OVERWRITE (fraction of the size written as overwrites, 0.25),
#      LOAD_CONCURRENCY (3), SNAPSHOT_OUT (default bench/cache/snapshot.db), SEED (42).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR="$BENCH_DIR/cache"
OUT=${SNAPSHOT_OUT:-$CACHE_DIR/snapshot.db}
SNAPSHOT_MB=${SNAPSHOT_MB:-1024}
OVERWRITE=${OVERWRITE:-0.25}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-3}
SEED=${SEED:-42}
FORCE=0

for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-snapshot.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

for tool in etcd etcdctl python3; do
  command -v "$tool" >/dev/null || { echo "make-snapshot.sh: '$tool' not found; install it (Debian: apt-get install -y etcd-server etcd-client python3)" >&2; exit 1; }
done

human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

if [[ -s "$OUT" && $FORCE -eq 0 ]]; then
  size=$(stat -c %s "$OUT")
  echo "snapshot: $OUT (cached; --force to rebuild)"
  echo "size: $size bytes ($(human "$size"))"
  [[ -s "$OUT.info" ]] && cat "$OUT.info"
  exit 0
fi

mkdir -p "$(dirname "$OUT")"
# run.sh derives its big memory-test inputs from the cached snapshot: drop them with it.
[[ "$OUT" == "$CACHE_DIR/snapshot.db" ]] && rm -f "$CACHE_DIR"/big-*.db
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cpvault-snap.XXXXXX")
ETCD_PID=
cleanup() {
  local rc=$?
  if [[ -n "$ETCD_PID" ]] && kill -0 "$ETCD_PID" 2>/dev/null; then
    kill "$ETCD_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ETCD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$TMP/etcd.log" ]]; then
    echo "--- last lines of the etcd log ---" >&2; tail -n 5 "$TMP/etcd.log" >&2
  fi
  rm -rf "$TMP"
  rm -f "$OUT.tmp" "$OUT.tmp.part"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r CLIENT_PORT PEER_PORT < <(python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
)
EP="http://127.0.0.1:$CLIENT_PORT"

echo "starting etcd on $EP (data dir $TMP/data)" >&2
start=$(date +%s)
etcd --name bench --data-dir "$TMP/data" \
  --listen-client-urls "$EP" --advertise-client-urls "$EP" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" \
  --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
  --max-request-bytes $((32 * 1024 * 1024)) --max-txn-ops 4096 \
  --snapshot-count 1000 --auto-compaction-retention 0 \
  --logger zap --log-outputs "$TMP/etcd.log" >"$TMP/etcd.out" 2>&1 &
ETCD_PID=$!

export ETCDCTL_API=3
for i in $(seq 100); do
  etcdctl --endpoints "$EP" --dial-timeout 1s endpoint health >/dev/null 2>&1 && break
  kill -0 "$ETCD_PID" 2>/dev/null || { echo "etcd exited early:" >&2; cat "$TMP/etcd.out" >&2; exit 1; }
  [[ $i -eq 100 ]] && { echo "etcd did not become healthy in 20s" >&2; exit 1; }
  sleep 0.2
done

echo "loading ~${SNAPSHOT_MB} MiB (overwrite fraction $OVERWRITE, $LOAD_CONCURRENCY connections)" >&2
summary=$(python3 "$BENCH_DIR/etcd_load.py" --port "$CLIENT_PORT" --target-mb "$SNAPSHOT_MB" \
  --overwrite "$OVERWRITE" --concurrency "$LOAD_CONCURRENCY" --seed "$SEED")
echo "load: $summary" >&2

# etcdctl writes <path>.part and renames it; save next to the final path, then rename.
etcdctl --endpoints "$EP" --command-timeout 600s snapshot save "$OUT.tmp" >"$TMP/save.log" 2>&1 \
  || { cat "$TMP/save.log" >&2; exit 1; }
mv -f "$OUT.tmp" "$OUT"
end=$(date +%s)

size=$(stat -c %s "$OUT")
keys=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["keys"])' "$summary")
status=$(etcdctl snapshot status "$OUT" -w json 2>/dev/null || true)
{
  echo "keys: $keys (live /registry/ keys)"
  echo "load: $summary"
  [[ -n "$status" ]] && echo "etcdctl snapshot status: $status"
  echo "built: $(date -u +%FT%TZ) in $((end - start))s, SNAPSHOT_MB=$SNAPSHOT_MB OVERWRITE=$OVERWRITE SEED=$SEED"
} >"$OUT.info"
echo "snapshot: $OUT"
echo "size: $size bytes ($(human "$size"))"
cat "$OUT.info"
