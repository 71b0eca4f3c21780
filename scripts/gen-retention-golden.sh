#!/usr/bin/env bash
# Regenerates tests/data/retention/golden.json: what the real restic (0.14, Debian's `restic`)
# keeps and removes for a fixed set of snapshot times and policies. tests/retention.rs checks
# cpvault's planner against it.
#
# Snapshot times are generated from a fixed seed (plus hand-picked times at DST switches in
# Europe/Berlin, ISO-week-year and month-end boundaries, exactly on two keep-within limits, and
# one time in the future), so a rerun gives the same times and, with the same restic, the same
# kept sets (only "now" changes).
#
# `restic backup --time` takes a local wall time, read in the zone of $TZ. Each backup runs
# with TZ set to the fixed-offset zone (Etc/GMT-N) that Europe/Berlin has at that instant,
# so even the first of the two 02:xx hours on a fall-back night can be expressed; restic
# stores the time with that offset. `restic forget` then runs with TZ=Europe/Berlin, so it
# buckets days, ISO weeks, months and hours in Berlin time.
#
# Usage: scripts/gen-retention-golden.sh [OUTPUT]   (needs restic, jq, GNU date; ~5 minutes)
set -euo pipefail

zone=Europe/Berlin
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/tests/data/retention/golden.json}

for tool in restic jq date; do
    command -v "$tool" >/dev/null || { echo "gen-retention-golden: needs $tool (apt-get install -y restic jq)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RESTIC_REPOSITORY=$work/repo
export RESTIC_PASSWORD=golden-test-only
export RESTIC_CACHE_DIR=$work/cache
mkdir "$work/data"
echo "cpvault retention golden" >"$work/data/file"
restic init -q >/dev/null

utc() { date -u -d "$1" +%s; }

# --- snapshot times (UTC epoch seconds) -------------------------------------------------
seed=20240331
r=0
next_rand() { # 0..32767 in $r, from a fixed linear congruential generator
    seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
    r=$(( seed / 65536 ))
}

start=$(utc "2021-12-20 08:00:00")
latest=$(utc "2024-03-31 10:00:00") # 12:00 CEST: the newest snapshot that is not in the future
{
    t=$start
    while (( t < latest - 86400 )); do
        echo "$t"
        next_rand
        p=$(( r % 100 ))
        next_rand
        if (( p < 25 )); then
            t=$(( t + 300 + r % 2400 ))                 # burst: several per hour
        elif (( p < 33 )); then
            t=$(( t + 5 * 86400 + (r * 47) % (15 * 86400) )) # gap of 5-20 days
        else
            t=$(( t + 7200 + (r * 11) % (3 * 86400) ))  # 2 hours to 3 days
        fi
    done
    for fixed in \
        "2022-01-02 22:30:00" "2022-01-02 23:30:00" \
        "2022-10-29 23:50:00" "2022-10-30 00:10:00" "2022-10-30 00:40:00" \
        "2022-10-30 01:20:00" "2022-10-30 01:50:00" "2022-10-30 02:10:00" \
        "2023-01-01 22:45:00" "2023-01-01 23:15:00" \
        "2023-03-26 00:30:00" "2023-03-26 00:55:00" "2023-03-26 01:05:00" "2023-03-26 01:40:00" \
        "2023-10-29 00:15:00" "2023-10-29 01:15:00" \
        "2023-12-31 22:40:00" "2023-12-31 23:20:00" \
        "2024-02-29 17:00:00" "2024-03-01 05:00:00" "2024-03-02 10:30:00" "2024-03-02 11:30:00" \
        "2024-03-24 11:00:00" "2024-03-29 22:00:00" \
        "2024-03-31 00:30:00" "2024-03-31 01:30:00" "2024-03-31 10:00:00" \
        "2099-06-01 10:00:00"; do
        utc "$fixed"
    done
} | sort -n -u >"$work/epochs"

count=$(wc -l <"$work/epochs")
(( count >= 300 )) || { echo "gen-retention-golden: only $count times generated" >&2; exit 1; }

# --- one backup per time ---------------------------------------------------------------
i=0
: >"$work/snapshots.jsonl"
while read -r e; do
    id=$(printf 's%03d' "$i")
    tags=()
    if (( i % 7 == 3 )); then tags+=(env=prod); elif (( i % 11 == 5 )); then tags+=(env=dev); fi
    if (( i % 13 == 0 )); then tags+=(pinned); fi
    off=$(TZ=$zone date -d "@$e" +%z) # +0100 or +0200
    hours=$(( 10#${off:1:2} ))
    (( ${off:3:2} == 0 )) || { echo "gen-retention-golden: offset $off is not whole hours" >&2; exit 1; }
    if [[ ${off:0:1} == + ]]; then fixed_zone=Etc/GMT-$hours; else fixed_zone=Etc/GMT+$hours; fi
    wall=$(TZ=$zone date -d "@$e" '+%Y-%m-%d %H:%M:%S')
    tag_flags=()
    for tag in ${tags[@]+"${tags[@]}"}; do tag_flags+=(--tag "$tag"); done
    short=$(TZ=$fixed_zone restic backup --json -q --host h --time "$wall" ${tag_flags[@]+"${tag_flags[@]}"} "$work/data" \
        | jq -r 'select(.message_type == "summary") | .snapshot_id')
    jq -nc --arg id "$id" --arg short "$short" --arg time "$(date -u -d "@$e" +%Y-%m-%dT%H:%M:%SZ)" \
        --args '{id: $id, short: $short, time: $time, tags: $ARGS.positional}' ${tags[@]+"${tags[@]}"} \
        >>"$work/snapshots.jsonl"
    i=$(( i + 1 ))
done <"$work/epochs"

# restic's own record of each time (with the offset it stored), joined by short id
export TZ=$zone
restic snapshots --json | jq -c 'map({key: .short_id, value: .time}) | from_entries' >"$work/stored.json"
jq -s --slurpfile stored "$work/stored.json" \
    'map(. + {restic_time: $stored[0][.short]})' "$work/snapshots.jsonl" >"$work/snapshots.json"
jq -e 'map(.short) | unique | length' "$work/snapshots.json" | grep -qx "$count" \
    || { echo "gen-retention-golden: short ids collide; rerun" >&2; exit 1; }

# --- policies (no -1: restic 0.14 predates it) -----------------------------------------
policies=(
    "--keep-last=5"
    "--keep-last=1000"
    "--keep-hourly=30"
    "--keep-hourly=500"
    "--keep-daily=14"
    "--keep-daily=400"
    "--keep-weekly=20"
    "--keep-weekly=200"
    "--keep-monthly=12"
    "--keep-yearly=5"
    "--keep-daily=7 --keep-weekly=4 --keep-monthly=6 --keep-yearly=3"
    "--keep-last=3 --keep-hourly=10 --keep-daily=10"
    "--keep-within=7d"
    "--keep-within=1m"
    "--keep-within=1m15d"
    "--keep-within=1y2h"
    "--keep-within=36h"
    "--keep-within-hourly=2d"
    "--keep-within-daily=1m"
    "--keep-within-weekly=3m"
    "--keep-within-monthly=1y"
    "--keep-within-yearly=2y"
    "--keep-tag=env=prod"
    "--keep-tag=pinned"
    "--keep-tag=env=prod,pinned"
    "--keep-tag=env=dev --keep-tag=pinned --keep-last=2"
    "--keep-tag="
    "--keep-last=2 --keep-daily=5 --keep-within=3d --keep-within-weekly=2m --keep-tag=pinned --keep-monthly=3"
    "--keep-hourly=4 --keep-within-daily=10d --keep-weekly=8 --keep-yearly=10"
)

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
: >"$work/policies.jsonl"
for policy in "${policies[@]}"; do
    read -r -a flags <<<"$policy"
    restic forget --dry-run --json "${flags[@]}" >"$work/forget.json"
    jq -c --slurpfile snaps "$work/snapshots.json" --arg flags "$policy" '
        ($snaps[0] | map({key: .short, value: .id}) | from_entries) as $ids
        | if length != 1 then error("expected one group, got \(length)") else .[0] end
        | {flags: ($flags | split(" ")),
           keep: [.keep as $k | .reasons as $r | range($k | length)
                  | {id: $ids[$k[.].short_id], reasons: $r[.].matches}],
           remove: [(.remove // [])[] | $ids[.short_id]]}' \
        "$work/forget.json" >>"$work/policies.jsonl"
done

mkdir -p "$(dirname "$out")"
jq -n --arg version "$(restic version)" --arg zone "$zone" --arg now "$now" \
    --slurpfile snaps "$work/snapshots.json" --slurpfile policies <(jq -s . "$work/policies.jsonl") '
    {generated_by: "scripts/gen-retention-golden.sh", restic: $version, tz: $zone, now: $now,
     snapshots: ($snaps[0] | map({id, time, restic_time, tags})),
     policies: $policies[0]}' >"$out"
echo "wrote $out: $count snapshots, ${#policies[@]} policies" >&2
