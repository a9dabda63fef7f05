#!/usr/bin/env bash
# Installs every Debian 12 package kyso needs to build, test, fuzz and run.
# Idempotent: installs only what is missing, and runs apt-get update only then.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev llvm
  # gRPC C core and protobuf-c (protoc-c generates C from proto/)
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  # crypto, HSM
  libssl-dev openssl softhsm2 p11-kit libp11-kit-dev opensc
  # storage, replication
  librocksdb-dev rocksdb-tools libraft-dev libuv1-dev
  # XML
  libxml2-dev libxmlsec1-dev xmlsec1
  # time-stamping: HTTP endpoint (libmicrohttpd), external TSA client (libcurl)
  libmicrohttpd-dev libcurl4-openssl-dev curl
  # config, tests
  libinih-dev libcmocka-dev strace procps
  # bulk import: CSV (libcsv); the synthetic province generator (python3)
  libcsv-dev python3
  # network namespaces for the cluster partition test (ip netns)
  iproute2
  # benchmarks: JSON results (cJSON), plots (gnuplot)
  libcjson-dev gnuplot-nox jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
