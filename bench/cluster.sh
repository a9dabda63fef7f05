#!/usr/bin/env bash
# kyso benchmark, replication scenario: the same load (Sign, Put, Get) on one node and on a
# 3-node cluster (Raft over mutual TLS, documents copied to a majority
# before each commit), all on this machine, in the same run. Reports each
# cluster figure with its ratio to the single node's.
#
#   bench/cluster.sh [--build DIR] [--out DIR] [--duration S] [--keep]
#
#   --build DIR   binaries already built in DIR (default: build and use build-bench)
#   --out DIR     results folder (default bench/results/DATE-HOST-cluster)
#   --duration S  seconds measured per scenario (default 10; 2 s warm-up first)
#   --workers N   kysod worker threads on every node (default 4); a cluster
#                 Sign holds its worker until the commit, so more workers
#                 keep more commits in flight
#   --keep        keep the work folder (tokens, PKI, logs) afterwards
#
# On one machine the three nodes and the load generator share the same
# cores and disk: the ratio shows what replication costs here, not what
# three machines would do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="" out="" dur=10 keep=0 workers=4
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    --duration) dur=$2; shift ;;
    --workers) workers=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/cluster.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench/cluster.sh: $*" >&2; exit 1; }

if [ -z "$build" ]; then
  build=$root/build-bench
  say "Installing what is missing and building (Release) into build-bench/"
  "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j"$(nproc)" --target kysod kyso kyso-bench >/dev/null
fi
kysod=$build/server/kysod kyso=$build/cli/kyso kb=$build/bench/src/kyso-bench
for b in "$kysod" "$kyso" "$kb"; do [ -x "$b" ] || die "$b is not built"; done
[ -n "$out" ] || out=$root/bench/results/$(date +%Y%m%d-%H%M%S)-$(hostname -s)-cluster
mkdir -p "$out/json"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/kyso-bench-cluster-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A random loopback port nothing answers on now.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(shuf -i 20000-60999 -n 1)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free loopback port found"
}

say "A throw-away PKI, one SoftHSM token per node, in $work"
bash "$root/tests/fixtures/pki.sh" init "$work/pki" >/dev/null
cat "$work/pki/server.pem" "$work/pki/chain.pem" > "$work/pki/server-chain.pem"
cat "$work/pki/root.pem" "$work/pki/chain.pem" > "$work/pki/client-ca.pem"
client_fp=$(openssl x509 -in "$work/pki/client.pem" -noout -fingerprint -sha256 | cut -d= -f2)
node_fp=$(openssl x509 -in "$work/pki/server.pem" -noout -fingerprint -sha256 | cut -d= -f2)

# node_conf NAME ID MEMBERS: a node's directory, token and configuration.
node_conf() {
  local name=$1 id=$2 members=$3 port=$4 d=$work/$1 pin
  mkdir -p "$d/data" && chmod 700 "$d/data"
  pin=$(openssl rand -hex 8)
  bash "$root/tests/fixtures/softhsm.sh" "$d/hsm" "kyso-$name" "$pin" "$(openssl rand -hex 8)" >/dev/null
  ( umask 077; printf '%s\n' "$pin" > "$d/hsm/user.pin" )
  cat > "$d/kysod.conf" <<CONF
[server]
listen = 127.0.0.1:$port
data_dir = data
node_id = $id
worker_threads = $workers
log_level = warn
[tls]
cert = $work/pki/server-chain.pem
key = $work/pki/server.key
client_ca = $work/pki/client-ca.pem
[hsm]
module = /usr/lib/softhsm/libsofthsm2.so
token = kyso-$name
pin_file = hsm/user.pin
[caller.bench]
fingerprint = $client_fp
roles = service,operator,archivist
[cli]
ca = $work/pki/root.pem
cert = $work/pki/client.pem
key = $work/pki/client.key
server_name = localhost
CONF
  if [ -n "$members" ]; then
    printf '[cluster]\n%speer_server_name = localhost\n[caller.nodes]\nfingerprint = %s\nroles = peer\n' \
      "$members" "$node_fp" >> "$d/kysod.conf"
  fi
}

start() { # NAME: starts its kysod, waits for ready
  local d=$work/$1
  ( cd "$d" && SOFTHSM2_CONF=$d/hsm/softhsm2.conf exec "$kysod" --config kysod.conf \
      > kysod.out 2>> kysod.log ) &
  pids+=($!)
  for _ in $(seq 1 600); do grep -q "kysod: ready" "$d/kysod.out" 2>/dev/null && return; sleep 0.1; done
  tail "$d/kysod.log" >&2; die "$1 did not get ready"
}
k() { local d=$work/$1; shift; "$kyso" --config "$d/kysod.conf" --address "$(cat "$d/addr")" "$@"; }
provision() { # NODE NAME PROFILE KEY-ARGS...
  local node=$1 name=$2 profile=$3; shift 3
  k "$node" keygen "$@" --algorithm ec-p256 >/dev/null
  k "$node" csr "$@" --subject "/C=VN/O=Kyso Bench/CN=$name" --out "$work/$node/$name.csr" >/dev/null
  bash "$root/tests/fixtures/pki.sh" issue "$work/pki" "$work/$node/$name.csr" "$work/$node/$name.pem" "$profile" >/dev/null
  k "$node" cert import "$@" "$work/$node/$name.pem" "$work/pki/chain.pem" >/dev/null
}
run() { # NAME NODE ARGS...
  local name=$1 node=$2; shift 2
  "$kb" --config "$work/$node/kysod.conf" --address "$(cat "$work/$node/addr")" --warmup 2 \
    --duration "$dur" --quiet --label "$name" --json "$out/json/$name.json" "$@" >&2
}

say "One node"
p=$(free_port); node_conf single 1 "" "$p"; echo "127.0.0.1:$p" > "$work/single/addr"
start single
provision single tsa tsa --tsa default
provision single bench.ec.0 signer --account bench.ec.0
run single_sign single --scenario sign --format t --account bench.ec.0 --size 4096 --concurrency 8
run single_put single --scenario put --size 4096 --concurrency 8
run single_get single --scenario get --size 4096 --concurrency 8 --get-docs 64
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()

say "Three nodes (Raft over mutual TLS)"
members=""
for i in 1 2 3; do
  rp[$i]=$(free_port); gp[$i]=$(free_port)
  members+="member = $i 127.0.0.1:${rp[$i]} 127.0.0.1:${gp[$i]}"$'\n'
done
for i in 1 2 3; do node_conf "n$i" "$i" "$members" "${gp[$i]}"; echo "127.0.0.1:${gp[$i]}" > "$work/n$i/addr"; done
for i in 1 2 3; do start "n$i"; done
leader=""
for _ in $(seq 1 100); do
  for i in 1 2 3; do
    if k "n$i" cluster status --json 2>/dev/null | jq -e '.state == "leader"' >/dev/null; then leader=n$i; fi
  done
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || die "no leader"
echo "leader: $leader" >&2
# Keys are per node: the same labels in every token.
for i in 1 2 3; do
  provision "n$i" tsa tsa --tsa default
  provision "n$i" bench.ec.0 signer --account bench.ec.0
done
run cluster_sign "$leader" --scenario sign --format t --account bench.ec.0 --size 4096 --concurrency 8
run cluster_put "$leader" --scenario put --size 4096 --concurrency 8
# Reads on the leader wait for a Raft barrier (linearizable).
run cluster_get "$leader" --scenario get --size 4096 --concurrency 8 --get-docs 64

say "Summary"
{
  echo "| scenario (4 KiB, concurrency 8) | one node /s | 3-node cluster /s | cluster / one node | cluster p99 ms |"
  echo "|---|---|---|---|---|"
  for s in sign put get; do
    jq -r --slurpfile c "$out/json/cluster_$s.json" --arg s "$s" \
      '"| \(if $s == "sign" then "Sign CAdES-T ECDSA P-256, archived" elif $s == "put" then "Archive.Put" else "Archive.Get (cluster: linearizable, on the leader)" end) | \(.throughput | floor) | \($c[0].throughput | floor) | \(($c[0].throughput / .throughput * 1000 | floor) / 10) % | \($c[0].latency_ms.p99) |"' \
      "$out/json/single_$s.json"
  done
} | tee "$out/summary.md"
echo "results: $out" >&2
