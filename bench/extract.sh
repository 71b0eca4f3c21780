#!/usr/bin/env bash
# Extract speed: `cpvault extract` (verifies every byte, syncs, and makes the dir visible only
# once verified) against what an operator would type without cpvault, on the same archive:
#   age -d -i KEY ARCHIVE | zstd -d | tar -x -C DIR            (no check, no sync)
#   age -d -i KEY ARCHIVE | zstd -d | tar -x -C DIR; sync -f DIR
# The three run in turn, REPEAT rounds; the table shows medians, the ratios are of medians.
# Peak RSS from /usr/bin/time (for a pipeline: the sum of its stages' peaks).
#
#   bash bench/make-snapshot.sh && bash bench/extract.sh
#
# Env: REPEAT (5)   rounds
#      SNAPSHOT     input snapshot (default bench/cache/snapshot.db, from make-snapshot.sh)
#      CPVAULT      cpvault binary (default target/release/cpvault, built if missing)
#      BENCH_TMP    where the store and outputs go (default ${TMPDIR:-/tmp}); removed at exit
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=${REPEAT:-5}
SNAPSHOT=${SNAPSHOT:-$REPO/bench/cache/snapshot.db}
CPVAULT=${CPVAULT:-$REPO/target/release/cpvault}
[[ -s "$SNAPSHOT" ]] || { echo "extract.sh: no $SNAPSHOT; run bash bench/make-snapshot.sh first" >&2; exit 1; }
[[ -x "$CPVAULT" ]] || (cd "$REPO" && cargo build --release --quiet)
for t in age zstd tar /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "extract.sh: needs $t (apt-get install -y age zstd tar time)" >&2; exit 1; }
done
W=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-extract.XXXXXX")
trap 'rm -rf "$W"' EXIT
export XDG_CONFIG_HOME="$W/no-config"
"$CPVAULT" keygen -o "$W/key.txt" > "$W/recipient" 2>/dev/null
# A small PKI next to the snapshot, as in a node backup.
mkdir -p "$W/pki/etcd"
for f in ca apiserver apiserver-kubelet-client front-proxy-ca etcd/ca etcd/server etcd/peer; do
  head -c 1200 /dev/urandom | base64 > "$W/pki/$f.crt"
  head -c 1700 /dev/urandom | base64 > "$W/pki/$f.key"; chmod 600 "$W/pki/$f.key"
done
REF=$("$CPVAULT" backup --store "$W/store" --cluster bench -r "$(cat "$W/recipient")" \
  --etcd-snapshot-file "$SNAPSHOT" --pki-dir "$W/pki" --quiet)
ARCHIVE="$W/store/$REF.tar.zst.age"
BYTES=$(stat -c %s "$SNAPSHOT")
echo "input: $(basename "$SNAPSHOT") $((BYTES / 1000000)) MB + 14 PKI files; archive $(( $(stat -c %s "$ARCHIVE") / 1000000 )) MB; $REPEAT rounds"

declare -A times rss
run() { # LABEL SNIPPET
  local label=$1 snippet=$2 out="$W/out"
  rm -rf "$out" "$W"/t.*
  sync; cat "$ARCHIVE" > /dev/null   # the archive warm in the page cache for every run
  local start end
  start=$(date +%s.%N)
  OUT="$out" ARCHIVE="$ARCHIVE" KEY="$W/key.txt" W="$W" REF="$REF" CPVAULT="$CPVAULT" \
    bash -c "$snippet"
  end=$(date +%s.%N)
  local m=0 f
  for f in "$W"/t.*; do m=$(( m + $(tail -1 "$f") )); done
  times[$label]+="$(echo "$end - $start" | bc) "
  (( m > ${rss[$label]:-0} )) && rss[$label]=$m
  return 0
}
T='/usr/bin/time -f %M -o'
CPV="$T \$W/t.1 \"\$CPVAULT\" extract --store \"\$W/store\" -i \"\$KEY\" --to \"\$OUT\" \"\$REF\" --quiet >/dev/null"
PIPE="mkdir \"\$OUT\" && $T \$W/t.1 age -d -i \"\$KEY\" \"\$ARCHIVE\" | $T \$W/t.2 zstd -d -q | $T \$W/t.3 tar -x -C \"\$OUT\""
for i in $(seq "$REPEAT"); do
  run cpvault "$CPV"
  run pipeline "$PIPE"
  run "pipeline+sync" "$PIPE && sync -f \"\$OUT\""
  echo "[round $i of $REPEAT] done" >&2
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
echo
echo "| command | median s | MB/s | runs (s) | peak RSS MiB |"
echo "| --- | --: | --: | --- | --: |"
declare -A med
for l in cpvault pipeline "pipeline+sync"; do
  med[$l]=$(median "${times[$l]}")
  printf '| %s | %.2f | %.0f | %s | %d |\n' "$l" "${med[$l]}" "$(echo "$BYTES / 1000000 / ${med[$l]}" | bc -l)" \
    "$(for t in ${times[$l]}; do printf '%.2f ' "$t"; done)" $(( ${rss[$l]} / 1024 ))
done
echo
printf 'ratio cpvault / (pipeline; sync -f): %.2f; cpvault / pipeline without sync: %.2f\n' \
  "$(echo "${med[cpvault]} / ${med[pipeline+sync]}" | bc -l)" "$(echo "${med[cpvault]} / ${med[pipeline]}" | bc -l)"
