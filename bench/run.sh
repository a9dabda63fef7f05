#!/usr/bin/env bash
# kyso benchmarks: how close one node gets to what its HSM, gRPC stack and
# disk allow, measured in the same run. Starts a throw-away kysod (SoftHSM
# token, test PKI) on loopback, measures the limits (raw PKCS#11 C_Sign of
# each key, the empty gRPC call, RocksDB synced Put), then every scenario,
# and writes JSON, a markdown table and gnuplot PNGs to the output folder.
#
#   bench/run.sh [--smoke | --standard | --full] [--build DIR] [--out DIR] [--keep]
#
#   --smoke      ~15 s, a few scenarios, no plots: CI keeps kyso-bench working
#   --standard   (default) every scenario at reduced scale (about 10 minutes)
#   --full       the issue's scale: 12,000 keys, 1,000,000 archived documents
#   --build DIR  use the binaries already built in DIR (skip install and build)
#   --out DIR    results folder (default bench/results/DATE-HOST-MODE)
#   --keep       keep the work folder (token, PKI, kysod log) afterwards
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=standard build="" out="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --standard) mode=standard ;;
    --full) mode=full ;;
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }

case "$mode" in
  smoke)    warm=1; dur=2; sweep="4"; keys_n=0; fills=""; limit_s=2 ;;
  standard) warm=2; dur=8; sweep="1 4 16"; keys_n=2000; fills="10000 100000"; limit_s=5 ;;
  full)     warm=3; dur=12; sweep="1 2 4 8 16 32"; keys_n=12000; fills="10000 100000 1000000"; limit_s=10 ;;
esac

if [ -z "$build" ]; then
  say "Installing what is missing and building (Release) into build-bench/"
  "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build-bench" -j"$(nproc)" --target kysod kyso kyso-bench kyso-bench-hsm \
    kyso-bench-disk kyso-bench-fill >/dev/null
  build=$root/build-bench
fi
kysod=$build/server/kysod kyso=$build/cli/kyso
kb=$build/bench/src/kyso-bench kbh=$build/bench/src/kyso-bench-hsm
kbd=$build/bench/src/kyso-bench-disk kbf=$build/bench/src/kyso-bench-fill
for b in "$kysod" "$kyso" "$kb" "$kbh" "$kbd" "$kbf"; do
  [ -x "$b" ] || die "$b is not built (build the kyso-bench* targets, or drop --build)"
done

[ -n "$out" ] || out=$root/bench/results/$(date +%Y%m%d-%H%M%S)-$(hostname -s)-$mode
mkdir -p "$out/json"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/kyso-bench-XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  if [ "$keep" = 1 ]; then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "Setting up a throw-away PKI, SoftHSM token and kysod in $work"
bash "$root/tests/fixtures/pki.sh" init "$work/pki" >/dev/null
pin=$(openssl rand -hex 8)
export SOFTHSM2_CONF
SOFTHSM2_CONF=$(bash "$root/tests/fixtures/softhsm.sh" "$work/hsm" kyso-bench "$pin" "$(openssl rand -hex 8)")
( umask 077; printf '%s\n' "$pin" > "$work/hsm/user.pin" )
cat "$work/pki/server.pem" "$work/pki/chain.pem" > "$work/pki/server-chain.pem"
cat "$work/pki/root.pem" "$work/pki/chain.pem" > "$work/pki/client-ca.pem"
mkdir -p "$work/data" && chmod 700 "$work/data"
fp=$(openssl x509 -in "$work/pki/client.pem" -noout -fingerprint -sha256 | cut -d= -f2)
workers=4
cat > "$work/kysod.conf" <<CONF
[server]
listen = 127.0.0.1:0
data_dir = data
worker_threads = $workers
log_level = warn
[tls]
cert = pki/server-chain.pem
key = pki/server.key
client_ca = pki/client-ca.pem
[hsm]
module = /usr/lib/softhsm/libsofthsm2.so
token = kyso-bench
pin_file = hsm/user.pin
sessions = 8
[caller.bench]
fingerprint = $fp
roles = service,operator,archivist
[cli]
ca = pki/root.pem
cert = pki/client.pem
key = pki/client.key
server_name = localhost
CONF

port=""
start_kysod() {
  : > "$work/kysod.out"
  "$kysod" --config "$work/kysod.conf" > "$work/kysod.out" 2>> "$work/kysod.log" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q "kysod: ready" "$work/kysod.out" && break
    kill -0 "$pid" 2>/dev/null || { tail "$work/kysod.log" >&2; die "kysod exited at start"; }
    sleep 0.1
  done
  grep -q "kysod: ready" "$work/kysod.out" || die "kysod did not get ready in 60 s"
  port=$(sed -n 's/^kysod: ready on .* port \([0-9]*\).*/\1/p' "$work/kysod.out")
}
stop_kysod() { [ -z "$pid" ] || { kill -TERM "$pid"; wait "$pid" || true; pid=""; }; }
k() { "$kyso" --config "$work/kysod.conf" --address "127.0.0.1:$port" "$@"; }
# kyso-bench NAME ARGS...: one run, its JSON in json/NAME.json.
bench() {
  local name=$1; shift
  "$kb" --config "$work/kysod.conf" --address "127.0.0.1:$port" --warmup "$warm" \
    --duration "$dur" --quiet --label "$name" --json "$out/json/$name.json" "$@" >&2
}
provision() { # ROLE-ARGS... : keygen, csr, issue, import
  local name=$1 profile=$2 alg=$3; shift 3
  k keygen "$@" --algorithm "$alg" >/dev/null
  k csr "$@" --subject "/C=VN/O=Kyso Bench/CN=$name" --out "$work/$name.csr" >/dev/null
  bash "$root/tests/fixtures/pki.sh" issue "$work/pki" "$work/$name.csr" "$work/$name.pem" "$profile" >/dev/null
  k cert import "$@" "$work/$name.pem" "$work/pki/chain.pem" >/dev/null
}
kysod_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"; }

start_kysod
provision tsa tsa ec-p256 --tsa default
provision bench.rsa.0 signer rsa-2048 --account bench.rsa.0
provision bench.ec.0 signer ec-p256 --account bench.ec.0
echo "kysod on 127.0.0.1:$port, $workers workers; keys: TSA (EC P-256), bench.rsa.0, bench.ec.0" >&2

say "Limits: raw PKCS#11 C_Sign per key ($workers threads, the same token), the empty gRPC call, RocksDB synced Put"
"$kbh" --module /usr/lib/softhsm/libsofthsm2.so --token kyso-bench --pin-file "$work/hsm/user.pin" \
  --label kyso/personal/bench.rsa.0 --label kyso/personal/bench.ec.0 --label kyso/tsa/default \
  --threads "$workers" --duration "$limit_s" --json "$out/json/limit_hsm.json" >&2
bench limit_grpc_empty --scenario health --concurrency 16
"$kbd" --dir "$work/disk-small" --value-size 8192 --threads 16 --duration "$limit_s" \
  --json "$out/json/limit_disk_8k.json" >&2
if [ "$mode" != smoke ]; then
  "$kbd" --dir "$work/disk-big" --value-size $((8 * 1024 * 1024)) --threads 2 --duration "$limit_s" \
    --json "$out/json/limit_disk_8m.json" >&2
fi

say "Sign: CAdES-BES and CAdES-T, RSA-2048 and ECDSA P-256, archived, concurrency $sweep"
for alg in rsa ec; do
  for fmt in bes t; do
    [ "$mode" = smoke ] && [ "$fmt$alg" != tec ] && continue
    for c in $sweep; do
      bench "sign_${fmt}_${alg}_c$c" --scenario sign --format "$fmt" --account "bench.$alg.0" \
        --size 4096 --concurrency "$c"
    done
  done
done

if [ "$mode" != smoke ]; then
  say "TSA alone; Put and Get of 4 KiB, 256 KiB and 8 MiB"
  bench stamp_c16 --scenario stamp --concurrency 16
  for size in 4096 262144 8388608; do
    c=8; [ "$size" -gt 1000000 ] && c=2
    bench "put_${size}" --scenario put --size "$size" --concurrency "$c"
    bench "get_${size}" --scenario get --size "$size" --concurrency "$c" --get-docs 16
  done

  say "Latency at half of peak: open loop, CAdES-T ECDSA"
  peak=$(jq -s 'map(.throughput) | max' "$out"/json/sign_t_ec_c*.json)
  half=$(jq -n --argjson p "$peak" '($p / 2) | floor')
  bench open_sign_t_ec_half --scenario sign --format t --account bench.ec.0 --size 4096 \
    --rate "$half" --concurrency 64

  say "Peak RSS while a 100 MiB document streams in"
  head -c $((100 * 1024 * 1024)) /dev/urandom > "$work/big.bin"
  echo 5 > "/proc/$pid/clear_refs" || true
  before=$(kysod_kib VmHWM)
  k archive put "$work/big.bin" --unit H37.BENCH >/dev/null
  jq -n --argjson before "$before" --argjson peak "$(kysod_kib VmHWM)" \
    '{tool:"run.sh", scenario:"rss_100mib", vmhwm_before_kib:$before, vmhwm_peak_kib:$peak}' \
    > "$out/json/rss_100mib.json"
  rm -f "$work/big.bin"

  have=0 # documents the filler added so far (numbered 0..have-1)
  for n in $fills; do
    say "Archive at $n documents: Sign and Get, kysod RSS"
    stop_kysod
    "$kbf" archive --data-dir "$work/data" --first "$have" --documents $((n - have)) \
      --json "$out/json/fill_archive_$n.json" >&2
    have=$n
    start_kysod
    bench "archive_${n}_sign" --scenario sign --format t --account bench.ec.0 --concurrency 8
    bench "archive_${n}_get" --scenario get --size 4096 --concurrency 8 --get-docs 64
    jq -n --argjson n "$n" --argjson rss "$(kysod_kib VmRSS)" --argjson hwm "$(kysod_kib VmHWM)" \
      '{tool:"run.sh", scenario:"archive_rss", documents:$n, vmrss_kib:$rss, vmhwm_kib:$hwm}' \
      > "$out/json/archive_rss_$n.json"
  done
  # After the archive runs, so that their RSS is not SoftHSM holding the
  # filled keys' objects in kysod's process.
  say "Keys: 1 key vs $keys_n keys in the token (import time reported)"
  bench keys_1 --scenario sign --format t --account bench.ec.0 --concurrency 8
  stop_kysod
  "$kbf" keys --config "$work/kysod.conf" --pki "$work/pki" --keys "$keys_n" --alg ec-p256 \
    --prefix bench.many.ec. --json "$out/json/fill_keys_ec.json" >&2
  "$kbf" keys --config "$work/kysod.conf" --pki "$work/pki" --keys "$keys_n" --alg rsa-2048 \
    --prefix bench.many.rsa. --json "$out/json/fill_keys_rsa.json" >&2
  t0=$(date +%s%N)
  start_kysod
  jq -n --argjson ms $((($(date +%s%N) - t0) / 1000000)) --argjson keys $((2 * keys_n + 3)) \
    --argjson rss "$(kysod_kib VmRSS)" \
    '{tool:"run.sh", scenario:"start_with_keys", seconds:($ms / 1000), keys:$keys,
      vmrss_ready_kib:$rss}' > "$out/json/start_keys.json"
  # The HSM's own cost of many keys: raw C_Sign round robin over them.
  "$kbh" --module /usr/lib/softhsm/libsofthsm2.so --token kyso-bench --pin-file "$work/hsm/user.pin" \
    --label kyso/personal/bench.ec.0 --label-prefix kyso/personal/bench.many.ec. --keys "$keys_n" \
    --threads "$workers" --duration "$limit_s" --json "$out/json/limit_hsm_keys.json" >&2
  # First use of each key in this kysod (certificate and key objects loaded
  # on demand), then the same keys again, as a DMS that signs all day sees.
  # kyso-bench starts its round robin at key 0 each run, so an unrecorded
  # pass long enough to reach every key comes between the two.
  bench "keys_${keys_n}_first" --scenario sign --format t --account-prefix bench.many.ec. \
    --keys "$keys_n" --concurrency 8 --warmup 0
  prime_s=$(jq --argjson n "$keys_n" '($n / .throughput) + 2 | ceil' "$out/json/keys_${keys_n}_first.json")
  "$kb" --config "$work/kysod.conf" --address "127.0.0.1:$port" --warmup 0 --duration "$prime_s" \
    --quiet --scenario sign --format t --account-prefix bench.many.ec. --keys "$keys_n" \
    --concurrency 8 >/dev/null
  bench "keys_$keys_n" --scenario sign --format t --account-prefix bench.many.ec. \
    --keys "$keys_n" --concurrency 8
  jq -n --argjson rss "$(kysod_kib VmRSS)" '{tool:"run.sh", scenario:"keys_rss", vmrss_kib:$rss}' \
    > "$out/json/keys_rss.json"
fi
stop_kysod

say "Summary"
"$root/bench/summarize.sh" "$out" "$mode" "$workers"
if [ "$mode" != smoke ] && command -v gnuplot >/dev/null; then
  "$root/bench/plot.sh" "$out"
fi
cat "$out/summary.md"
# A run that measured nothing is a failure, not a table of zeros.
jq -e '(.sign | length) > 0 and all(.sign[]; .throughput > 0) and .limits.grpc_empty_call > 0' \
  "$out/summary.json" >/dev/null || die "the run measured no throughput; see $out/json"
echo "results: $out" >&2
