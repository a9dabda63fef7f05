#!/usr/bin/env bash
# kyso quickstart: install what is missing, build, start one kysod node on a
# throw-away SoftHSM token and test PKI, then generate keys, get them
# certified, sign the sample documents and verify them with openssl.
# Everything it makes stays under demo/ (git-ignored).
#
#   deploy/quickstart.sh          do all of that (stops an earlier demo node first)
#   deploy/quickstart.sh --stop   stop the demo node
#   deploy/quickstart.sh --help
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=$root/demo
build=$root/build
port=${KYSO_DEMO_PORT:-7443}
tsa_port=$((port + 1)) # the RFC 3161 HTTP endpoint

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "quickstart: $*" >&2; exit 1; }

stop_node() {
  if [ -f "$demo/kysod.pid" ]; then
    pid=$(cat "$demo/kysod.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      # wait for the graceful stop (in-flight calls finish first)
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "stopped kysod (pid $pid)"
    fi
    rm -f "$demo/kysod.pid"
  fi
}

case "${1:-}" in
  --help|-h) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --stop) stop_node; exit 0 ;;
  "") ;;
  *) die "unknown option '$1' (try --help)" ;;
esac

say "1. Installing Debian packages that are missing (deploy/install-deps.sh)"
bash "$root/deploy/install-deps.sh"

say "2. Building kyso (cmake, $build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target kysod kyso
kysod=$build/server/kysod
kyso=$build/cli/kyso

stop_node
rm -rf "$demo"
mkdir -p "$demo/out" "$demo/data"
chmod 700 "$demo" "$demo/data"

say "3. Making a throw-away test PKI (root CA -> government sub-CA -> TLS and client certificates)"
bash "$root/tests/fixtures/pki.sh" init "$demo/pki"
cat "$demo/pki/server.pem" "$demo/pki/chain.pem" > "$demo/pki/server-chain.pem"
cat "$demo/pki/root.pem" "$demo/pki/chain.pem" > "$demo/pki/client-ca.pem"
echo "trust anchor: demo/pki/root.pem; client certificate: demo/pki/client.pem"

say "4. Creating a SoftHSM token 'kyso-demo' with random PINs"
pin=$(openssl rand -hex 8)
sopin=$(openssl rand -hex 8)
umask 077
softhsm_conf=$(bash "$root/tests/fixtures/softhsm.sh" "$demo/hsm" kyso-demo "$pin" "$sopin")
printf '%s\n' "$pin" > "$demo/hsm/user.pin"
printf '%s\n' "$sopin" > "$demo/hsm/so.pin"
umask 022
echo "token in demo/hsm/tokens, PIN in demo/hsm/user.pin (mode 0600)"

fingerprint=$(openssl x509 -in "$demo/pki/client.pem" -noout -fingerprint -sha256 | cut -d= -f2)
cat > "$demo/kyso.conf" <<CONF
# kyso demo node (made by deploy/quickstart.sh). Paths are relative to this file.
[server]
listen = 127.0.0.1:$port
data_dir = data
worker_threads = 4
log_level = info

[tls]
cert = pki/server-chain.pem
key = pki/server.key
client_ca = pki/client-ca.pem

[hsm]
module = /usr/lib/softhsm/libsofthsm2.so
token = kyso-demo
pin_file = hsm/user.pin
sessions = 4

# The demo's one client may do everything; production gives each caller one role.
[caller.demo]
fingerprint = $fingerprint
roles = service,operator,archivist

# kysod is also an RFC 3161 time-stamping authority; its HTTP endpoint is
# off unless configured. Every signature is CAdES-T (time-stamped) by default.
[tsa]
http_listen = 127.0.0.1:$tsa_port

# What the kyso command uses: kyso --config demo/kyso.conf ...
[cli]
address = 127.0.0.1:$port
ca = pki/root.pem
cert = pki/client.pem
key = pki/client.key
server_name = localhost
CONF

say "5. Starting kysod on 127.0.0.1:$port (log: demo/kysod.log)"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  die "port $port is already in use (an earlier kysod? stop it, or run with KYSO_DEMO_PORT=OTHER)"
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$tsa_port") 2>/dev/null; then
  die "port $tsa_port (the TSA's HTTP endpoint) is already in use; run with KYSO_DEMO_PORT=OTHER"
fi
SOFTHSM2_CONF=$softhsm_conf nohup "$kysod" --config "$demo/kyso.conf" > "$demo/kysod.out" 2> "$demo/kysod.log" &
echo $! > "$demo/kysod.pid"
for _ in $(seq 1 100); do
  grep -q "kysod: ready" "$demo/kysod.out" 2>/dev/null && break
  kill -0 "$(cat "$demo/kysod.pid")" 2>/dev/null || { cat "$demo/kysod.log" >&2; die "kysod did not start"; }
  sleep 0.1
done
grep -q "kysod: ready" "$demo/kysod.out" || { cat "$demo/kysod.log" >&2; die "kysod did not become ready"; }
cat "$demo/kysod.out"
k() { echo "\$ kyso $*"; "$kyso" --config "$demo/kyso.conf" "$@"; }
k health

say "6. Generating keys inside the HSM and getting them certified"
echo "First the TSA key: kysod time-stamps every signature with it (CAdES-T)."
k keygen --tsa default --algorithm ec-p256
k csr --tsa default --subject "/C=VN/O=UBND Tỉnh/CN=kyso demo TSA" --out "$demo/tsa.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$demo/tsa.csr" "$demo/tsa.pem" tsa
k cert import --tsa default "$demo/tsa.pem" "$demo/pki/chain.pem"
k keygen --account nguyen.van.a --algorithm ec-p256
k csr --account nguyen.van.a --subject "/C=VN/O=UBND Tỉnh/OU=Sở Thông tin và Truyền thông/CN=Nguyễn Văn A" --out "$demo/nguyen.van.a.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$demo/nguyen.van.a.csr" "$demo/nguyen.van.a.pem" signer
k cert import --account nguyen.van.a "$demo/nguyen.van.a.pem" "$demo/pki/chain.pem"
k keygen --seal --unit H37.DN.001 --algorithm rsa-2048
k csr --seal --unit H37.DN.001 --subject "/C=VN/O=UBND Tỉnh/CN=Sở Thông tin và Truyền thông (H37.DN.001)" --out "$demo/H37.DN.001.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$demo/H37.DN.001.csr" "$demo/H37.DN.001.pem" seal
k cert import --seal --unit H37.DN.001 "$demo/H37.DN.001.pem" "$demo/pki/chain.pem"
k keys

say "7. Signing the sample documents: the official's signature, then the unit's seal"
for f in "$root"/deploy/samples/*; do
  name=$(basename "$f")
  cp "$f" "$demo/out/$name"
  k sign --account nguyen.van.a --unit H37.DN.001 --title "$name" --out "$demo/out/$name.p7s" "$demo/out/$name"
  k sign --seal --unit H37.DN.001 --account nguyen.van.a --out "$demo/out/$name.seal.p7s" "$demo/out/$name"
done

say "8. Verifying every signature with openssl (a tool we did not write) and with kyso verify"
ok=0
for f in "$demo"/out/*.p7s; do
  doc=${f%.p7s}; doc=${doc%.seal}
  echo "\$ openssl cms -verify -cades -binary -content ${doc#$root/} -inform DER -in ${f#$root/} -CAfile demo/pki/root.pem -purpose any"
  openssl cms -verify -cades -binary -content "$doc" -inform DER -in "$f" \
    -CAfile "$demo/pki/root.pem" -purpose any -out /dev/null
  "$kyso" verify --ca "$demo/pki/root.pem" "$doc" "$f"
  ok=$((ok + 1))
done

say "8b. kysod as a time-stamping authority (RFC 3161), checked by openssl"
first=$(ls "$root"/deploy/samples/ | head -1)
echo "\$ openssl ts -query -data demo/out/$first -sha256 -cert -out demo/out/$first.tsq"
openssl ts -query -data "$demo/out/$first" -sha256 -cert -out "$demo/out/$first.tsq"
echo "\$ curl -H 'Content-Type: application/timestamp-query' --data-binary @demo/out/$first.tsq http://127.0.0.1:$tsa_port/tsa -o demo/out/$first.http.tsr"
curl -sS -H 'Content-Type: application/timestamp-query' --data-binary "@$demo/out/$first.tsq" \
  "http://127.0.0.1:$tsa_port/tsa" -o "$demo/out/$first.http.tsr"
echo "\$ openssl ts -verify -in demo/out/$first.http.tsr -data demo/out/$first -CAfile demo/pki/root.pem -untrusted demo/pki/chain.pem"
openssl ts -verify -in "$demo/out/$first.http.tsr" -data "$demo/out/$first" \
  -CAfile "$demo/pki/root.pem" -untrusted "$demo/pki/chain.pem"
k timestamp --ca "$demo/pki/root.pem" -o "$demo/out/$first.tsr" "$demo/out/$first"
openssl ts -reply -in "$demo/out/$first.tsr" -text | sed -n '/^TST info/,/^TSA/p'

say "9. The archive: each document kept once, by its SHA-256, with its signature chain"
id=$(sha256sum "$demo/out/$first" | cut -d' ' -f1)
k archive stat "$id"
k archive get "$id" --out "$demo/out/$first.from-archive"
cmp "$demo/out/$first" "$demo/out/$first.from-archive" && echo "the archived original is byte-identical"
echo "A 20 MiB document goes in by streaming, and is signed by its archive id:"
head -c $((20 * 1024 * 1024)) /dev/urandom > "$demo/out/scan.bin"
k archive put "$demo/out/scan.bin" --unit H37.DN.001 --number "46/QD-UBND" --date "$(date +%F)"
big=$(sha256sum "$demo/out/scan.bin" | cut -d' ' -f1)
k sign --account nguyen.van.a --archive-id "$big" --out "$demo/out/scan.bin.p7s"
openssl cms -verify -cades -binary -content "$demo/out/scan.bin" -inform DER -in "$demo/out/scan.bin.p7s" \
  -CAfile "$demo/pki/root.pem" -purpose any -out /dev/null
ok=$((ok + 1))
k archive ls --unit H37.DN.001
k archive scrub
k archive backup "$demo/backup-$(date +%Y%m%d-%H%M%S)"

say "Done: $ok signatures made in the HSM and verified"
cat <<EOF2
kysod is still running (pid $(cat "$demo/kysod.pid")), so you can carry on by hand:
  build/cli/kyso --config demo/kyso.conf keys
  build/cli/kyso --config demo/kyso.conf sign --account nguyen.van.a YOUR.pdf
  build/cli/kyso --config demo/kyso.conf archive ls --unit H37.DN.001
  openssl cms -verify -cades -binary -content YOUR.pdf -inform DER -in YOUR.pdf.p7s -CAfile demo/pki/root.pem -purpose any
Stop it with: deploy/quickstart.sh --stop
EOF2
