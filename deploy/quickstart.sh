#!/usr/bin/env bash
# kyso quickstart: install what is missing, build, start a local 3-node
# cluster (deploy/cluster.sh: one Raft group over mutual TLS, each node with
# its own SoftHSM token, all from one throw-away test PKI), then generate
# keys, get them certified, sign the sample documents, verify them with
# openssl, and kill -9 the leader to show a failover and a catch-up.
# Everything it makes stays under demo-cluster/ (git-ignored).
#
#   deploy/quickstart.sh          do all of that (starts a fresh cluster)
#   deploy/quickstart.sh --stop   stop the cluster
#   deploy/quickstart.sh --help
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster=$root/deploy/cluster.sh
# The helpers: kyso_on, leader_id, wait_for_leader, node_pid, tsa_port ...
# shellcheck source=deploy/cluster.sh
source "$cluster"
demo=$cluster_dir # demo-cluster/
out=$demo/out

# Any node serves every call: a follower prepares a write as the leader
# would and passes it to the leader (kyso.v1.Peer/Propose). Keys are made on
# node 1 (key_node), leading or not, wrapped under the cluster's KEK and
# recorded through the Raft log; every other node unwraps them into its own
# token. Signs go to a follower, and the failover kills the leader.
key_node=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "quickstart: $*" >&2; exit 1; }

# kn N ARGS...: show and run the kyso command against node N.
kn() {
  local n=$1
  shift
  echo "\$ kyso --config demo-cluster/node$n/kyso.conf $*"
  kyso_on "$n" "$@"
}

# sign_on: sets $signer, the node a Sign goes to: a running follower, to
# show that any node serves it (it passes the prepared write to the leader).
sign_on() {
  local l n
  l=$(wait_for_leader) || die "no leader; see demo-cluster/node*/kysod.log"
  for n in 1 2 3; do
    [ "$n" != "$l" ] && [ "$n" != "${victim:-0}" ] && signer=$n && return
  done
}

# verify_cms DOC SIG: the independent check, with openssl.
verify_cms() {
  echo "\$ openssl cms -verify -cades -binary -content $(rel "$1") -inform DER -in $(rel "$2") -CAfile demo-cluster/pki/root.pem -purpose any"
  openssl cms -verify -cades -binary -content "$1" -inform DER -in "$2" \
    -CAfile "$demo/pki/root.pem" -purpose any -out /dev/null
}

case "${1:-}" in
  --help | -h) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --stop)
    bash "$cluster" down
    exit 0
    ;;
  "") ;;
  *) die "unknown option '$1' (try --help)" ;;
esac

say "1. Installing Debian packages that are missing (deploy/install-deps.sh)"
bash "$root/deploy/install-deps.sh"

say "2. A fresh local 3-node cluster (deploy/cluster.sh up --fresh)"
bash "$cluster" up --fresh
mkdir -p "$out"

say "3. Generating keys inside node $key_node's HSM and getting them certified"
echo "Node $key_node may lead or not: a follower passes its writes to the leader. Each key is wrapped once under the cluster's KEK and recorded through the Raft log; the other nodes unwrap it into their own tokens."
echo "First the TSA key: kysod time-stamps every signature with it (CAdES-T)."
kn "$key_node" keygen --tsa default --algorithm ec-p256
kn "$key_node" csr --tsa default --subject "/C=VN/O=UBND Tỉnh/CN=kyso demo TSA" --out "$out/tsa.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$out/tsa.csr" "$out/tsa.pem" tsa
kn "$key_node" cert import --tsa default "$out/tsa.pem" "$demo/pki/chain.pem"
kn "$key_node" keygen --account nguyen.van.a --algorithm ec-p256
kn "$key_node" csr --account nguyen.van.a --subject "/C=VN/O=UBND Tỉnh/OU=Sở Thông tin và Truyền thông/CN=Nguyễn Văn A" --out "$out/nguyen.van.a.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$out/nguyen.van.a.csr" "$out/nguyen.van.a.pem" signer
kn "$key_node" cert import --account nguyen.van.a "$out/nguyen.van.a.pem" "$demo/pki/chain.pem"
kn "$key_node" keygen --seal --unit H37.DN.001 --algorithm rsa-2048
kn "$key_node" csr --seal --unit H37.DN.001 --subject "/C=VN/O=UBND Tỉnh/CN=Sở Thông tin và Truyền thông (H37.DN.001)" --out "$out/H37.DN.001.csr"
bash "$root/tests/fixtures/pki.sh" issue "$demo/pki" "$out/H37.DN.001.csr" "$out/H37.DN.001.pem" seal
kn "$key_node" cert import --seal --unit H37.DN.001 "$out/H37.DN.001.pem" "$demo/pki/chain.pem"
kn "$key_node" keys
for n in 1 2 3; do
  [ "$n" = "$key_node" ] && continue
  # Installed after the log entry applies there: poll for the last certificate.
  deadline=$(($(now_ms) + wait_seconds * 1000))
  until kyso_on "$n" keys 2>/dev/null | grep -A1 '^kyso/seal/H37.DN.001' | grep -q 'not after'; do
    [ "$(now_ms)" -lt "$deadline" ] || die "node $n did not install the keys; see demo-cluster/node$n/kysod.log"
    sleep 0.2
  done
  echo "node $n installed them in its own token:"
  kn "$n" keys
done

say "4. Signing the sample documents: the official's signature, then the unit's seal"
sign_on
echo "Signing on node $signer, a follower: it signs in its own token and passes the archive record to the leader."
for f in "$root"/deploy/samples/*; do
  name=$(basename "$f")
  cp "$f" "$out/$name"
  kn "$signer" sign --account nguyen.van.a --unit H37.DN.001 --title "$name" --out "$out/$name.p7s" "$out/$name"
  kn "$signer" sign --seal --unit H37.DN.001 --account nguyen.van.a --out "$out/$name.seal.p7s" "$out/$name"
done

say "5. Verifying every signature with openssl (a tool we did not write) and with kyso verify"
ok=0
for f in "$out"/*.p7s; do
  doc=${f%.p7s}
  doc=${doc%.seal}
  verify_cms "$doc" "$f"
  "$kyso" verify --ca "$demo/pki/root.pem" "$doc" "$f"
  ok=$((ok + 1))
done

say "6. kysod as a time-stamping authority (RFC 3161), checked by openssl"
first=$(find "$root/deploy/samples/" -maxdepth 1 -type f -printf '%f\n' | sort | head -1)
tsa=$(tsa_port "$key_node") # any node would do: each holds the TSA key (serials carry its node id)
echo "\$ openssl ts -query -data demo-cluster/out/$first -sha256 -cert -out demo-cluster/out/$first.tsq"
openssl ts -query -data "$out/$first" -sha256 -cert -out "$out/$first.tsq"
echo "\$ curl -H 'Content-Type: application/timestamp-query' --data-binary @demo-cluster/out/$first.tsq http://127.0.0.1:$tsa/tsa -o demo-cluster/out/$first.http.tsr"
curl -sS -H 'Content-Type: application/timestamp-query' --data-binary "@$out/$first.tsq" \
  "http://127.0.0.1:$tsa/tsa" -o "$out/$first.http.tsr"
echo "\$ openssl ts -verify -in demo-cluster/out/$first.http.tsr -data demo-cluster/out/$first -CAfile demo-cluster/pki/root.pem -untrusted demo-cluster/pki/chain.pem"
openssl ts -verify -in "$out/$first.http.tsr" -data "$out/$first" \
  -CAfile "$demo/pki/root.pem" -untrusted "$demo/pki/chain.pem"
kn "$key_node" timestamp --ca "$demo/pki/root.pem" -o "$out/$first.tsr" "$out/$first"
openssl ts -reply -in "$out/$first.tsr" -text | sed -n '/^TST info/,/^TSA/p'

say "7. The archive: each document kept once, by its SHA-256, with its signature chain (replicated)"
l=$(wait_for_leader) || die "no leader"
f=$((l % 3 + 1)) # a follower
echo "Any node serves archive calls: node $f, a follower, passes writes to the leader (node $l) and reads as of the leader's commit."
id=$(sha256sum "$out/$first" | cut -d' ' -f1)
kn "$f" archive stat "$id"
kn "$f" archive get "$id" --out "$out/$first.from-archive"
cmp "$out/$first" "$out/$first.from-archive" && echo "the archived original is byte-identical"
echo "A 20 MiB document goes in by streaming, and is signed by its archive id:"
head -c $((20 * 1024 * 1024)) /dev/urandom > "$out/scan.bin"
kn "$f" archive put "$out/scan.bin" --unit H37.DN.001 --number "46/QD-UBND" --date "$(date +%F)"
big=$(sha256sum "$out/scan.bin" | cut -d' ' -f1)
sign_on
kn "$signer" sign --account nguyen.van.a --archive-id "$big" --out "$out/scan.bin.p7s"
verify_cms "$out/scan.bin" "$out/scan.bin.p7s"
ok=$((ok + 1))
kn "$f" archive ls --unit H37.DN.001
kn "$l" archive scrub
kn "$l" archive backup "$demo/backup-node$l-$(date +%Y%m%d-%H%M%S)"

say "8. The cluster: one leader, every node applied the same log"
bash "$cluster" status

say "9. Failover: kill -9 the leader, a new one is elected"
victim=$(wait_for_leader) || die "no leader"
before=$(applied_index "$victim")
echo "\$ kill -KILL $(node_pid "$victim")   # node $victim, the leader, applied index $before"
t0=$(now_ms)
kill -KILL "$(node_pid "$victim")"
l=$(wait_for_leader "$victim") || die "no new leader within ${wait_seconds}s; see demo-cluster/node*/kysod.log"
echo "node $l leads after $(($(now_ms) - t0)) ms"
# The leader marks a member unreachable once it has not heard from it for
# two election timeouts: poll for that, then show it.
deadline=$(($(now_ms) + wait_seconds * 1000))
until status_json "$l" | jq -e --argjson v "$victim" 'any(.members[]; .id == $v and (.reachable | not))' >/dev/null; do
  [ "$(now_ms)" -lt "$deadline" ] || break
  sleep 0.1
done
kn "$l" cluster status || true
echo "What was acknowledged before the kill is still there (2 of 3 nodes are a majority):"
kn "$l" archive get "$big" --out "$out/scan.bin.after-failover"
cmp "$out/scan.bin" "$out/scan.bin.after-failover" && echo "the 20 MiB document is byte-identical"
echo "And the cluster still takes writes: a new document, archived, then signed by its archive id:"
printf 'Công văn số 124/UBND-VP, sau khi node %s dừng (%s)\n' "$victim" "$(date -Is)" > "$out/after-failover.txt"
kn "$l" archive put "$out/after-failover.txt" --unit H37.DN.001 --number "124/UBND-VP" --date "$(date +%F)"
sign_on
kn "$signer" sign --account nguyen.van.a --archive-id "$(sha256sum "$out/after-failover.txt" | cut -d' ' -f1)" \
  --out "$out/after-failover.txt.p7s"
verify_cms "$out/after-failover.txt" "$out/after-failover.txt.p7s"
"$kyso" verify --ca "$demo/pki/root.pem" "$out/after-failover.txt" "$out/after-failover.txt.p7s"
ok=$((ok + 1))

say "10. Restarting node $victim: it catches up from the others' log"
l=$(wait_for_leader) || die "no leader"
target=$(applied_index "$l")
KYSO_SKIP_BUILD=1 bash "$cluster" up # the binaries the others run
wait_caught_up "$victim" "$target" || die "node $victim did not catch up to index $target; see demo-cluster/node$victim/kysod.log"
echo "node $victim applied index $(applied_index "$victim") (it had $before when it was killed; the leader is at $target)"
kn "$victim" cluster status

say "Done: $ok signatures made in the HSM and verified; failover and catch-up shown"
cat <<EOF
The cluster is still running, so you can carry on by hand (every node holds the keys):
  build/cli/kyso --config demo-cluster/node$key_node/kyso.conf keys
  build/cli/kyso --config demo-cluster/node$key_node/kyso.conf sign --account nguyen.van.a YOUR.pdf
  build/cli/kyso --config demo-cluster/node$key_node/kyso.conf archive ls --unit H37.DN.001
  openssl cms -verify -cades -binary -content YOUR.pdf -inform DER -in YOUR.pdf.p7s -CAfile demo-cluster/pki/root.pem -purpose any
  deploy/cluster.sh status
(Any node takes every call; a follower passes writes to the leader, 'deploy/cluster.sh status' names it.)
Stop it with: deploy/quickstart.sh --stop
EOF
