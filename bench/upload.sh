#!/usr/bin/env bash
# Upload: `cpvault backup --etcd-snapshot-file` of the realistic snapshot to a local store
# and to S3 servers on loopback (s3s-fs; moto when SERVERS names it), runs in turn, REPEAT
# rounds. Reports each target's median wall time, its ratio to the local store's, and the
# CPU seconds of cpvault (from /usr/bin/time) and of the server (from /proc/PID/stat).
# Over http the S3 payload is signed by default; the `-unsigned` targets set
# AWS_UNSIGNED_PAYLOAD=true (the https default).
#
#   bash bench/make-snapshot.sh && bash bench/upload.sh
#
# Env: REPEAT (5)          rounds
#      SERVERS ("s3s-fs")  "s3s-fs moto" for both
#      SNAPSHOT            input (default bench/cache/snapshot.db)
#      CPVAULT             cpvault binary (default target/release/cpvault, built if missing)
#      BENCH_TMP           where stores go (default ${TMPDIR:-/tmp}); removed at exit
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=${REPEAT:-5}
SERVERS=${SERVERS:-s3s-fs}
SNAPSHOT=${SNAPSHOT:-$REPO/bench/cache/snapshot.db}
CPVAULT=${CPVAULT:-$REPO/target/release/cpvault}
[[ -s "$SNAPSHOT" ]] || { echo "upload.sh: no $SNAPSHOT; run bash bench/make-snapshot.sh first" >&2; exit 1; }
[[ -x "$CPVAULT" ]] || (cd "$REPO" && cargo build --release --quiet)
[[ -x /usr/bin/time ]] || { echo "upload.sh: needs GNU time (apt-get install -y time)" >&2; exit 1; }
W=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-upload.XXXXXX")
declare -A pid port secret
trap 'for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$W"' EXIT
export XDG_CONFIG_HOME="$W/no-config"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
recipient=$("$CPVAULT" keygen -o "$W/key.txt" 2>/dev/null)
ticks=$(getconf CLK_TCK)
cpu_of() { awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

for s in $SERVERS; do
  port[$s]=$(free_port)
  case $s in
    s3s-fs)
      mkdir -p "$W/s3s-root/bench"
      s3s-fs --host 127.0.0.1 --port "${port[$s]}" --access-key bench --secret-key benchsecret \
        "$W/s3s-root" >"$W/s3s.log" 2>&1 &
      pid[$s]=$!; secret[$s]=benchsecret ;;
    moto)
      moto_server -H 127.0.0.1 -p "${port[$s]}" >"$W/moto.log" 2>&1 &
      pid[$s]=$!; secret[$s]=bench ;;
    *) echo "upload.sh: unknown server $s" >&2; exit 1 ;;
  esac
  for _ in $(seq 150); do
    curl -s -o /dev/null "http://127.0.0.1:${port[$s]}/" && break
    sleep 0.2
  done
  [[ $s == moto ]] && curl -sf -X PUT "http://127.0.0.1:${port[$s]}/bench" >/dev/null
done

targets=(local)
for s in $SERVERS; do targets+=("$s" "$s-unsigned"); done
declare -A times cpu server_cpu
run() { # TARGET
  local t=$1 s=${1%-unsigned} store env=()
  if [[ $t == local ]]; then
    rm -rf "$W/store"; store="$W/store"
  else
    store="s3://bench/up"
    env=(AWS_ENDPOINT_URL="http://127.0.0.1:${port[$s]}" AWS_ACCESS_KEY_ID=bench
      AWS_SECRET_ACCESS_KEY="${secret[$s]}" AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true)
    [[ $t == *-unsigned ]] && env+=(AWS_UNSIGNED_PAYLOAD=true)
  fi
  sync
  local before=0
  [[ $t != local ]] && before=$(cpu_of "${pid[$s]}")
  env "${env[@]}" /usr/bin/time -f '%e %U %S' -o "$W/t" "$CPVAULT" -q backup --store "$store" \
    --cluster bench -r "$recipient" --etcd-snapshot-file "$SNAPSHOT" >/dev/null
  read -r wall user sys < <(tail -1 "$W/t")
  times[$t]+="$wall "
  cpu[$t]+="$(echo "$user + $sys" | bc) "
  [[ $t != local ]] && server_cpu[$t]+="$(echo "$(cpu_of "${pid[$s]}") - $before" | bc) "
  echo "[$(date +%T)] $t: ${wall}s" >&2
}
for i in $(seq "$REPEAT"); do
  for t in "${targets[@]}"; do run "$t"; done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
echo "input: $(basename "$SNAPSHOT") $(( $(stat -c %s "$SNAPSHOT") / 1000000 )) MB; $REPEAT rounds, targets in turn"
echo
echo "| target | median s | / local | runs (s) | cpvault CPU s (median) | server CPU s (median) |"
echo "| --- | --: | --: | --- | --: | --: |"
local_median=$(median "${times[local]}")
for t in "${targets[@]}"; do
  m=$(median "${times[$t]}")
  sc=-; [[ $t != local ]] && sc=$(median "${server_cpu[$t]}")
  printf '| %s | %.2f | %.2f | %s| %.2f | %s |\n' "$t" "$m" "$(echo "$m / $local_median" | bc -l)" \
    "${times[$t]}" "$(median "${cpu[$t]}")" "$sc"
done
