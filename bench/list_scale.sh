#!/usr/bin/env bash
# Listing at fleet scale: fabricates CLUSTERS × PER_CLUSTER backups in a local directory store
# (each a copy of one genuine manifest with its own id and time, its archive a hard link to
# the genuine one), then times `cpvault list`, `list --cluster`, `show CLUSTER/latest` and
# `prune --dry-run` on it, REPEAT times each, with peak RSS from /usr/bin/time: first with no
# listing cache, then after one real backup per cluster has written its cache (and what that
# rewrite costs a backup). With s3s-fs on PATH (`cargo install s3s-fs@0.14.1 --locked
# --features binary`), the same files are then served as an S3 bucket on loopback and timed
# through it the same two ways.
#
#   bash bench/list_scale.sh
#
# Env: CLUSTERS (10), PER_CLUSTER (1000), REPEAT (5)
#      CPVAULT   cpvault binary (default target/release/cpvault, built if missing)
#      BENCH_TMP where the store goes (default ${TMPDIR:-/tmp}); removed at exit
#      S3=0      skip the s3s-fs run
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTERS=${CLUSTERS:-10}
PER_CLUSTER=${PER_CLUSTER:-1000}
REPEAT=${REPEAT:-5}
CPVAULT=${CPVAULT:-$REPO/target/release/cpvault}
if [[ ! -x "$CPVAULT" ]]; then
  (cd "$REPO" && cargo build --release --quiet)
fi
[[ -x /usr/bin/time ]] || { echo "list_scale.sh: needs GNU time (apt-get install -y time)" >&2; exit 1; }
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-list.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT
export XDG_CONFIG_HOME="$WORK/no-config"
# The store is a directory named like a bucket, so that s3s-fs can serve $WORK as its root.
STORE="$WORK/fleet"
"$CPVAULT" keygen -o "$WORK/key.txt" > "$WORK/recipient" 2>/dev/null
head -c 65536 /dev/urandom > "$WORK/snapshot.db"
REF=$("$CPVAULT" backup --store "$STORE" --cluster genuine -r "$(cat "$WORK/recipient")" \
  --etcd-snapshot-file "$WORK/snapshot.db" --quiet)
python3 - "$STORE" "$REF" "$CLUSTERS" "$PER_CLUSTER" <<'PY'
import json, os, sys, datetime
store, ref, clusters, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
outer = json.load(open(f"{store}/{ref}.manifest.json"))
archive = f"{store}/{ref}.tar.zst.age"
base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
for c in range(clusters):
    cluster = f"fleet-{c:02d}"
    os.makedirs(f"{store}/{cluster}", exist_ok=True)
    for i in range(per):
        t = base + datetime.timedelta(minutes=i * clusters + c)
        bid = t.strftime("%Y%m%dT%H%M%SZ") + f"-{i * 7919 + c:08x}"
        m = dict(outer, cluster=cluster, id=bid, created=t.isoformat(), completed=t.isoformat())
        m["archive"] = dict(outer["archive"], key=f"{cluster}/{bid}.tar.zst.age")
        with open(f"{store}/{cluster}/{bid}.manifest.json", "w") as f:
            json.dump(m, f)
        os.link(archive, f"{store}/{cluster}/{bid}.tar.zst.age")
PY
N=$((CLUSTERS * PER_CLUSTER + 1))
PICK=fleet-$(printf %02d $(( CLUSTERS > 3 ? 3 : 0 )))
echo "store: $N backups ($CLUSTERS clusters × $PER_CLUSTER + 1), local directory; median of $REPEAT"
echo
echo "| command | median s | runs (s) | peak RSS MiB |"
echo "| --- | --- | --- | --- |"
measure() {
  local label=$1; shift
  local times=() rss=0
  for _ in $(seq "$REPEAT"); do
    /usr/bin/time -f '%e %M' -o "$WORK/t" "$CPVAULT" "$@" --store "$STORE" > /dev/null
    read -r t m < <(tail -1 "$WORK/t")
    times+=("$t"); (( m > rss )) && rss=$m
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p")
  echo "| \`$label\` | $median | ${times[*]} | $(( rss / 1024 )) |"
}
measure "cpvault list" list
measure "cpvault list --output json" list --output json
measure "cpvault list --cluster $PICK" list --cluster $PICK
measure "cpvault show $PICK/latest" show $PICK/latest
measure "cpvault prune --dry-run --keep-last 10" prune --dry-run --keep-last 10

# Each backup rewrites its cluster's listing cache (one object holding the cluster's
# manifests and signatures); one real backup per fleet cluster builds them all.
cache_all() {
  for c in $(seq 0 $((CLUSTERS - 1))); do
    "$CPVAULT" backup --store "$STORE" --cluster "$(printf fleet-%02d "$c")" \
      -r "$(cat "$WORK/recipient")" --etcd-snapshot-file "$WORK/snapshot.db" --quiet >/dev/null
  done
}
cache_all
echo
echo "With every cluster's listing cache written ($((N + CLUSTERS)) backups):"
echo
echo "| command | median s | runs (s) | peak RSS MiB |"
echo "| --- | --- | --- | --- |"
measure "cpvault list" list
measure "cpvault list --cluster $PICK" list --cluster $PICK
measure "cpvault show $PICK/latest" show $PICK/latest
measure "cpvault prune --dry-run --keep-last 10" prune --dry-run --keep-last 10
# What rewriting the cache costs a backup: one into a cluster of 1,000 backups against one
# into a cluster of its own (64 KiB snapshot each).
backup_args=(-r "$(cat "$WORK/recipient")" --etcd-snapshot-file "$WORK/snapshot.db" --quiet)
measure "cpvault backup --cluster $PICK (1,000 backups; cache rewritten)" backup --cluster $PICK "${backup_args[@]}"
measure "cpvault backup --cluster lone (a cluster of its own)" backup --cluster lone "${backup_args[@]}"
echo
echo "$PICK's listing cache: $(stat -c %s "$STORE/$PICK/listing-cache.json.zst") bytes"

if [[ ${S3:-1} == 0 ]]; then exit 0; fi
if ! command -v s3s-fs >/dev/null; then
  echo; echo "(s3s-fs not on PATH: S3 run skipped)"; exit 0
fi
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key benchsecret "$WORK" \
  >"$WORK/s3s.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
STORE="s3://fleet"
echo
echo "The same store through s3s-fs on loopback (S3, SigV4; the top level, then one flat LIST per"
echo "cluster, 16 in flight, then 64 GETs in flight). The caches written through the local store"
echo "do not match what s3s-fs lists (no entity tags), so every manifest is fetched:"
echo
echo "| command | median s | runs (s) | peak RSS MiB |"
echo "| --- | --- | --- | --- |"
measure "cpvault list (s3s-fs)" list
measure "cpvault list --cluster $PICK (s3s-fs)" list --cluster $PICK
cache_all
echo
echo "With the listing caches written through s3s-fs ($((N + 2 * CLUSTERS)) backups):"
echo
echo "| command | median s | runs (s) | peak RSS MiB |"
echo "| --- | --- | --- | --- |"
measure "cpvault list (s3s-fs)" list
measure "cpvault list --cluster $PICK (s3s-fs)" list --cluster $PICK
measure "cpvault show $PICK/latest (s3s-fs)" show $PICK/latest
measure "cpvault backup --cluster $PICK (s3s-fs; cache rewritten)" backup --cluster $PICK "${backup_args[@]}"
measure "cpvault backup --cluster lone (s3s-fs)" backup --cluster lone "${backup_args[@]}"
