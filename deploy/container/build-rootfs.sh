#!/usr/bin/env bash
# Assembles the root filesystem of the cpvault image from this machine's files, so the image
# needs no base image and no registry: `FROM scratch` + this tree (README "Running
# unattended"). It holds the cpvault binary given, the tools cpvault runs (ssh for the SSH
# sources, etcd and etcdctl for restore drills), every shared library they load (from ldd),
# the CA bundle, and passwd/group entries for the unprivileged user 65532 (ssh refuses to run
# as a uid without one). It never touches anything outside OUT.
#
# usage: build-rootfs.sh CPVAULT_BINARY OUT_DIR
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 CPVAULT_BINARY OUT_DIR" >&2
  exit 2
fi
bin=$1
out=$2
[ -x "$bin" ] || { echo "error: $bin is not an executable file" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"/{usr/local/bin,usr/bin,etc/ssl/certs,tmp,home/cpvault}
chmod 1777 "$out/tmp"

tools=()
for t in ssh etcd etcdctl; do
  p=$(command -v "$t") || { echo "error: $t is not installed (apt-get install openssh-client etcd-server etcd-client)" >&2; exit 1; }
  tools+=("$p")
  install -m 0755 "$p" "$out/usr/bin/$t"
done
install -m 0755 "$bin" "$out/usr/local/bin/cpvault"

# Every library the binaries load, at the path the dynamic loader looks for it.
for f in "$bin" "${tools[@]}"; do
  ldd "$f" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
cpvault:x:65532:65532:cpvault:/home/cpvault:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
cpvault:x:65532:
GROUP
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
chown 65532:65532 "$out/home/cpvault" 2>/dev/null || true
