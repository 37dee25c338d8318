#!/usr/bin/env bash
# Installs the system packages Palisade's build, tests and demo use, when they are missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The L7 proxy's tests talk to a real memcached server and use curl as an HTTP client.
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${PALISADE_NEED_GENERATORS:-0}" = 1 ]; then
  command -v clang >/dev/null 2>&1 || need+=(clang llvm)
  [ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
fi
for extra in ${PALISADE_EXTRA_PACKAGES:-}; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing packages: ${need[*]} (install them, or run as root on Debian/Ubuntu)" >&2
  exit 1
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
