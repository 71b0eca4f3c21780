#!/usr/bin/env bash
# Downloads: `cpvault verify` (keyless: download + sha256; and deep, with the key) of one
# archive on s3s-fs and on moto (S3 servers on loopback), with one streaming GET
# (CPVAULT_DOWNLOAD_CONCURRENCY=1) against ranged GETs in flight (the default, 4 × 8 MiB),
# pairs run in turn, REPEAT times; peak RSS from /usr/bin/time.
#
#   bash bench/download.sh
#
# Env: SIZE_MB (256)  input size (random bytes: compression does not shrink them)
#      REPEAT (5)     pairs per measurement; the table shows medians
#      CPVAULT        cpvault binary (default target/release/cpvault, built if missing)
#      SERVERS        "s3s-fs moto" (either or both)
#      BENCH_TMP      where stores go (default ${TMPDIR:-/tmp}); removed at exit
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${SIZE_MB:-256}
REPEAT=${REPEAT:-5}
SERVERS=${SERVERS:-s3s-fs moto}
CPVAULT=${CPVAULT:-$REPO/target/release/cpvault}
[[ -x "$CPVAULT" ]] || (cd "$REPO" && cargo build --release --quiet)
[[ -x /usr/bin/time ]] || { echo "download.sh: needs GNU time (apt-get install -y time)" >&2; exit 1; }
W=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cpvault-download.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$W"' EXIT
export XDG_CONFIG_HOME="$W/no-config"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
log() { echo "[$(date +%T)] $*" >&2; }
recipient=$("$CPVAULT" keygen -o "$W/key.txt" 2>/dev/null)
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$W/input.bin"

start_server() {
  local name=$1 port
  port=$(free_port)
  case $name in
    s3s-fs)
      mkdir -p "$W/s3s-root/bench"
      s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key benchsecret \
        "$W/s3s-root" >"$W/s3s.log" 2>&1 &
      pids+=($!)
      secret=benchsecret ;;
    moto)
      moto_server -H 127.0.0.1 -p "$port" >"$W/moto.log" 2>&1 &
      pids+=($!)
      secret=bench ;;
  esac
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench \
    AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
  for _ in $(seq 150); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.2
  done
  [[ $name == moto ]] && curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null
  return 0
}

echo "| server | command | GETs | median s | MB/s | runs (s) | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for server in $SERVERS; do
  start_server "$server"
  store="s3://bench/dl"
  ref=$("$CPVAULT" -q backup --store "$store" --cluster bench -r "$recipient" --file "$W/input.bin")
  archive_bytes=$(( SIZE_MB * 1024 * 1024 ))
  for mode in keyless deep; do
    extra=(); [[ $mode == deep ]] && extra=(-i "$W/key.txt")
    declare -A times=() rss=()
    for i in $(seq "$REPEAT"); do
      for c in 1 4; do
        CPVAULT_DOWNLOAD_CONCURRENCY=$c /usr/bin/time -f '%e %M' -o "$W/t" \
          "$CPVAULT" -q verify --store "$store" "$ref" "${extra[@]}" >/dev/null
        read -r t m < <(tail -1 "$W/t")
        times[$c]+="$t "; (( m > ${rss[$c]:-0} )) && rss[$c]=$m
        log "$server $mode c=$c: ${t}s $((m / 1024)) MiB"
      done
    done
    for c in 1 4; do
      median=$(printf '%s\n' ${times[$c]} | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p")
      label=$([[ $c == 1 ]] && echo "1 streaming" || echo "4 × 8 MiB ranged")
      mbps=$(python3 -c "print(f'{$archive_bytes / $median / 1e6:.0f}')")
      echo "| $server | verify ($mode) | $label | $median | $mbps | ${times[$c]}| $(( ${rss[$c]} / 1024 )) |"
    done
    unset times rss
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
done
