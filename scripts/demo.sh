#!/usr/bin/env bash
# The main job end to end on a fresh machine, with nothing of yours touched: installs etcd if
# needed, builds cpvault, starts a throwaway local etcd with sample keys, backs it up (a live
# snapshot over etcd's gRPC API) and a sample PKI directory with a fresh key into a local directory store,
# lists, signs and verifies (without and with the key, and who wrote it), extracts, and proves the extracted snapshot
# restores into an etcd that serves the sample keys. Everything lives in one temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

# etcd for the demo; protoc because the etcd gRPC client is generated at build time.
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || ! command -v protoc >/dev/null; then
  echo "== installing etcd-server, etcd-client and protobuf-compiler (apt)"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq etcd-server etcd-client protobuf-compiler >/dev/null
fi

echo "== building cpvault"
cargo build --quiet
cpvault="$PWD/target/debug/cpvault"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
export XDG_CONFIG_HOME="$work/config" ETCDCTL_API=3
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

start_etcd() { # data-dir name client-port peer-port
  etcd --name "$2" --data-dir "$1" \
    --listen-client-urls "http://127.0.0.1:$3" --advertise-client-urls "http://127.0.0.1:$3" \
    --listen-peer-urls "http://127.0.0.1:$4" --initial-advertise-peer-urls "http://127.0.0.1:$4" \
    --initial-cluster "$2=http://127.0.0.1:$4" >"$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do etcdctl --endpoints "127.0.0.1:$3" endpoint health >/dev/null 2>&1 && return; sleep 0.1; done
  echo "etcd did not start; log:"; cat "$1.log"; exit 1
}

echo "== starting a throwaway etcd with sample keys"
c1=$(port); p1=$(port)
start_etcd "$work/etcd" demo "$c1" "$p1"
for i in $(seq 1 20); do etcdctl --endpoints "127.0.0.1:$c1" put "/registry/configmaps/default/demo-$i" "value-$i" >/dev/null; done

echo "== a sample PKI directory (keys 0600, certificates 0644)"
mkdir -p pki/etcd
for f in ca apiserver etcd/ca; do
  head -c 1200 /dev/urandom | base64 > "pki/$f.crt"; chmod 644 "pki/$f.crt"
  head -c 1600 /dev/urandom | base64 > "pki/$f.key"; chmod 600 "pki/$f.key"
done

echo "== cpvault keygen (age identity) and keygen --signing (who wrote a backup)"
recipient=$("$cpvault" keygen -o key.txt)
signer=$("$cpvault" keygen --signing -o signing.key)
echo "demo@workstation $signer" > allowed_signers
export CPVAULT_ALLOWED_SIGNERS="$work/allowed_signers"
echo "== cpvault backup (signed)"
ref=$("$cpvault" backup --store "$work/store" --cluster demo -r "$recipient" \
  --etcd-endpoint "http://127.0.0.1:$c1" --pki-dir pki --tag origin=demo --signing-key signing.key)
echo "== cpvault show (etcd facts recorded from the live server)"
"$cpvault" show --store "$work/store" "$ref" | grep '^etcd:' 
echo "== cpvault list"
"$cpvault" list --store "$work/store"
echo "== cpvault verify (no key: ciphertext size and sha256)"
"$cpvault" verify --store "$work/store" "$ref"
echo "== cpvault verify -i key.txt (every layer, and the signature under allowed_signers)"
"$cpvault" verify --store "$work/store" "$ref" -i key.txt
if command -v ssh-keygen >/dev/null; then
  echo "== the same signature checked by stock ssh-keygen, without cpvault"
  ssh-keygen -Y verify -f allowed_signers -I demo@workstation -n cpvault \
    -s "$work/store/$ref.manifest.sig" < "$work/store/$ref.manifest.json"
fi
echo "== cpvault extract"
"$cpvault" extract --store "$work/store" "$ref" -i key.txt --to restored
diff -r pki restored/pki && echo "PKI identical"
[ "$(stat -c %a restored/pki/ca.key)" = 600 ] && echo "modes kept (ca.key 0600)"

echo "== etcdctl snapshot restore of the extracted snapshot, then read the keys back"
c2=$(port); p2=$(port)
etcdctl snapshot restore restored/etcd/snapshot.db --data-dir "$work/etcd-restored" --name restored \
  --initial-cluster "restored=http://127.0.0.1:$p2" --initial-advertise-peer-urls "http://127.0.0.1:$p2" >/dev/null 2>&1
start_etcd "$work/etcd-restored" restored "$c2" "$p2"
got=$(etcdctl --endpoints "127.0.0.1:$c2" get --prefix /registry/configmaps/default/ --keys-only | grep -c demo-)
[ "$got" = 20 ] || { echo "expected 20 keys after restore, got $got"; exit 1; }
echo "restored etcd serves all $got sample keys"
echo "== demo finished: backup $ref verified, extracted and restored"
