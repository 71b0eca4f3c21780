#!/usr/bin/env bash
# Storage over time: what cpvault and restic store when a cluster is backed up again and again.
#
#   bash bench/storage_over_time.sh
#
# Starts a throwaway etcd on free 127.0.0.1 ports, fills it to START_MB with etcd_load.py, then
# ROUNDS times: a Kubernetes-like write load (etcd_churn.py: keys rewritten, leases and other hot
# kinds most, some created, some deleted), a compaction to the revision of the previous round as
# kube-apiserver does every 5 minutes (never a defrag, which the apiserver never does),
# `etcdctl snapshot save`, then `cpvault backup` of the snapshot into one store and `restic
# backup` of it into one repo. Prints a markdown table of the db size and both stores' total
# bytes (du --apparent-size) after each round, with a summary line; also written to OUT.
# Env: START_MB (256)  starting db size in MiB;   ROUNDS (30)
#      REWRITE (0.10), CREATE (0.02), DELETE (0.02)  per round, fractions of the live keys
#      OVERWRITE (0.25) fraction of the initial load written as overwrites;  SEED (42)
#      LOAD_CONCURRENCY (3); CPVAULT (default target/release/cpvault, built if missing)
#      BENCH_TMP where etcd, store and repo go (default ${TMPDIR:-/tmp}); removed at exit
#      OUT (bench/out/storage-over-time.md; the per-round figures go next to it as .tsv)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
START_MB=${START_MB:-256}
ROUNDS=${ROUNDS:-30}
REWRITE=${REWRITE:-0.10}
CREATE=${CREATE:-0.02}
DELETE=${DELETE:-0.02}
OVERWRITE=${OVERWRITE:-0.25}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-3}
SEED=${SEED:-42}
CPVAULT=${CPVAULT:-$REPO/target/release/cpvault}
OUT=${OUT:-$BENCH_DIR/out/storage-over-time.md}

case "${1:-}" in
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "storage_over_time.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

missing=0
for tool in etcd etcdctl python3 restic; do
  if ! command -v "$tool" >/dev/null; then
    case $tool in
      etcd) pkg=etcd-server ;; etcdctl) pkg=etcd-client ;; *) pkg=$tool ;;
    esac
    echo "storage_over_time.sh: '$tool' not found; install it: apt-get install -y $pkg" >&2
    missing=1
  fi
done
[[ $missing -eq 0 ]] || exit 1
if [[ ! -x "$CPVAULT" ]]; then
  echo "storage_over_time.sh: $CPVAULT missing; building it (cargo build --release)" >&2
  (cd "$REPO" && cargo build --release --quiet)
fi

TMP=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-storage.XXXXXX")
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
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }
since() { python3 -c 'import sys,time; print("%.1f" % (time.time() - float(sys.argv[1])))' "$1"; }
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$@"; }
bytes() { du -s --apparent-size -b "$1" | cut -f1; }

read -r CLIENT_PORT PEER_PORT < <(python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
)
EP="http://127.0.0.1:$CLIENT_PORT"
log "starting etcd on $EP (data dir $TMP/data)"
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
ctl() { etcdctl --endpoints "$EP" --command-timeout 600s "$@"; }
for i in $(seq 100); do
  etcdctl --endpoints "$EP" --dial-timeout 1s endpoint health >/dev/null 2>&1 && break
  kill -0 "$ETCD_PID" 2>/dev/null || { echo "etcd exited early:" >&2; cat "$TMP/etcd.out" >&2; exit 1; }
  [[ $i -eq 100 ]] && { echo "etcd did not become healthy in 20s" >&2; exit 1; }
  sleep 0.2
done

log "loading ~${START_MB} MiB (overwrite fraction $OVERWRITE)"
STATE="$TMP/keys.tsv"
load=$(python3 "$BENCH_DIR/etcd_load.py" --port "$CLIENT_PORT" --target-mb "$START_MB" \
  --overwrite "$OVERWRITE" --concurrency "$LOAD_CONCURRENCY" --seed "$SEED" --keys-out "$STATE")
log "load: $load"
prev_rev=$(jget "$load" 'd["revision"]')

export XDG_CONFIG_HOME="$TMP/no-config" RESTIC_CACHE_DIR="$TMP/restic-cache"
RESTIC_PASSWORD=$(head -c 24 /dev/urandom | base64)
export RESTIC_PASSWORD
STORE="$TMP/cpvault-store" RESTIC_REPO="$TMP/restic-repo" SNAP_DIR="$TMP/snap"
mkdir -p "$SNAP_DIR"
recipient=$("$CPVAULT" keygen -o "$TMP/key.txt" 2>/dev/null)
restic init -q --repo "$RESTIC_REPO" --repository-version 2 >/dev/null

mkdir -p "$(dirname "$OUT")"
TSV="${OUT%.md}.tsv"
printf 'round\trevision\tkeys\tputs\tdeletes\tbytes_put\tdb_size\tdb_in_use\tsnapshot\tcpvault_total\trestic_total\tchurn_s\tcpvault_s\trestic_s\n' >"$TSV"
for round in $(seq "$ROUNDS"); do
  t=$(now)
  churn=$(python3 "$BENCH_DIR/etcd_churn.py" --port "$CLIENT_PORT" --state "$STATE" \
    --round "$round" --rewrite "$REWRITE" --create "$CREATE" --delete "$DELETE" \
    --concurrency "$LOAD_CONCURRENCY" --seed "$SEED")
  churn_s=$(since "$t")
  rev=$(jget "$churn" 'd["revision"]')
  # the apiserver compacts to the revision it saw at its previous compaction, 5 minutes ago
  ctl compact "$prev_rev" --physical >/dev/null
  prev_rev=$rev
  status=$(ctl endpoint status -w json)
  db_size=$(jget "$status" 'd[0]["Status"]["dbSize"]')
  db_in_use=$(jget "$status" 'd[0]["Status"].get("dbSizeInUse", 0)')
  rm -f "$SNAP_DIR/snapshot.db"
  ctl snapshot save "$SNAP_DIR/snapshot.db" >"$TMP/save.log" 2>&1 || { cat "$TMP/save.log" >&2; exit 1; }
  snap=$(stat -c %s "$SNAP_DIR/snapshot.db")
  t=$(now)
  "$CPVAULT" backup --store "$STORE" --cluster storage-bench -r "$recipient" \
    --etcd-snapshot-file "$SNAP_DIR/snapshot.db" --quiet >/dev/null
  cpvault_s=$(since "$t")
  t=$(now)
  (cd "$SNAP_DIR" && restic -q --repo "$RESTIC_REPO" backup --host storage-bench snapshot.db >/dev/null)
  restic_s=$(since "$t")
  cp_total=$(bytes "$STORE")
  re_total=$(bytes "$RESTIC_REPO")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$rev" \
    "$(jget "$churn" 'd["keys"]')" "$(jget "$churn" 'd["puts"]')" "$(jget "$churn" 'd["deletes"]')" \
    "$(jget "$churn" 'd["bytes_put"]')" "$db_size" "$db_in_use" "$snap" "$cp_total" "$re_total" \
    "$churn_s" "$cpvault_s" "$restic_s" >>"$TSV"
  log "round $round/$ROUNDS: db $((db_size >> 20)) MiB ($((db_in_use >> 20)) in use), cpvault $((cp_total >> 20)) MiB, restic $((re_total >> 20)) MiB (load ${churn_s}s, cpvault ${cpvault_s}s, restic ${restic_s}s)"
done

python3 - "$TSV" "$load" "$START_MB" "$REWRITE" "$CREATE" "$DELETE" \
  "$("$CPVAULT" --version)" "$(restic version | cut -d' ' -f1-2)" "$(etcd --version | head -1)" <<'PY' | tee "$OUT"
import csv, json, sys, time
tsv, load, start_mb, rw, cr, de, v_cp, v_re, v_etcd = sys.argv[1:]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
load = json.loads(load)
MB = 1e6
def mb(x): return "%.1f" % (int(x) / MB)
print("Storage over time, run of %s (%s, %s, %s)." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), v_cp, v_re, v_etcd))
print("Start: %d live keys, db %s MB after the load (START_MB=%s). Per round: REWRITE=%s, CREATE=%s, DELETE=%s"
      " of the live keys, compaction to the previous round's revision, no defrag. MB = 10^6."
      % (load["keys"], mb(load["db_size"]), start_mb, rw, cr, de))
print()
print("| round | keys | MB put | db MB | db in use MB | cpvault total MB | cpvault +MB | restic total MB | restic +MB |")
print("| --: | --: | --: | --: | --: | --: | --: | --: | --: |")
prev = None
for r in rows:
    dc = int(r["cpvault_total"]) - (int(prev["cpvault_total"]) if prev else 0)
    dr = int(r["restic_total"]) - (int(prev["restic_total"]) if prev else 0)
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["round"], r["keys"], mb(r["bytes_put"]), mb(r["db_size"]), mb(r["db_in_use"]),
        mb(r["cpvault_total"]), mb(dc), mb(r["restic_total"]), mb(dr)))
    prev = r
print()
if len(rows) > 1:
    n = len(rows) - 1
    cp = (int(rows[-1]["cpvault_total"]) - int(rows[0]["cpvault_total"])) / n
    re = (int(rows[-1]["restic_total"]) - int(rows[0]["restic_total"])) / n
    put = sum(int(r["bytes_put"]) for r in rows[1:]) / n
    print("Summary: after round 1, cpvault added %.1f MB per round and restic %.1f MB per round on average"
          " (restic/cpvault = %.2f; %.1f MB put into etcd per round; snapshot %.1f MB at the end)."
          % (cp / MB, re / MB, re / cp if cp else float("nan"), put / MB, int(rows[-1]["snapshot"]) / MB))
PY
