#!/usr/bin/env bash
# Regenerates the seed corpora of the RFC 3161 fuzz targets — ts_reply,
# ts_query, tsa_state — and data/signature.p7s, from a throw-away PKI
# (tests/fixtures/pki.sh) and the openssl command line; python3 (standard
# library only) does the little DER surgery openssl cannot (the hash of a
# signature value, a CAdES-T unsigned attribute, truncations, byte flips).
#
#   make_ts_seeds.sh            rewrites corpus/{ts_reply,ts_query,tsa_state}/seed-*
#                               and data/{signature.p7s,token.tst} next to this script
#
# Inputs libFuzzer found (files not named seed-*) are left alone, but those
# of ts_reply that were accepted answers or CAdES-T signatures refer to the
# old data/signature.p7s and lose their depth. The nonce and document below
# must match fuzz_ts_reply.c.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pki_sh="$here/../fixtures/pki.sh"
NONCE=0x4B59534F46555A5A # "KYSOFUZZ", FUZZ_NONCE in fuzz_ts_reply.c
DOC='kyso fuzz: the signed document'
POLICY=1.3.6.1.4.1.99999.1.1 # the policy of fuzz_ts_query.c's TSA
OTHER_POLICY=1.3.6.1.4.1.99999.1.2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kyso-ts-seeds-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# --- DER helpers ---------------------------------------------------------
cat > der.py <<'PY'
"""Minimal DER walking for the seed generator: definite lengths only."""
import hashlib, random, sys

def tlv(b, i):
    """(tag, content start, end) of the element at i."""
    tag, n = b[i], b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(b[i:i + k], "big")
        i += k
    return tag, i, i + n

def enc(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(lb)]) + lb
    return bytes([tag]) + head + content

def kids(b, start):
    _, i, end = tlv(b, start)
    out = []
    while i < end:
        out.append(i)
        i = tlv(b, i)[2]
    return out

def at(b, start, path):
    for p in path:
        start = kids(b, start)[p]
    return start

def modify(b, start, path, fn):
    """The element at start, re-encoded with fn applied to the one at path."""
    tag, _, end = tlv(b, start)
    if not path:
        return fn(b[start:end])
    ks = kids(b, start)
    parts = [b[k:tlv(b, k)[2]] for k in ks]
    idx = path[0] % len(ks)
    parts[idx] = modify(b, ks[idx], path[1:], fn)
    return enc(tag, b"".join(parts))

# ContentInfo -> [0] -> SignedData -> signerInfos (last) -> first SignerInfo
SIGNER_INFO = [1, 0, -1, 0]
# id-aa-signatureTimeStampToken, 1.2.840.113549.1.9.16.2.14
TS_ATTR_OID = enc(0x06, bytes.fromhex("2a864886f70d010910020e"))

def signature_value(cms):
    si = at(cms, 0, SIGNER_INFO)
    for k in kids(cms, si):
        tag, s, e = tlv(cms, k)
        if tag == 0x04:
            return cms[s:e]
    raise SystemExit("no signature value")

def add_tokens(cms, tokens):
    """cms with one unsignedAttrs [1] holding a signature-time-stamp
    attribute of the tokens (the SignerInfo must have none)."""
    attr = enc(0x30, TS_ATTR_OID + enc(0x31, b"".join(tokens)))

    def append(si):
        tag, s, e = tlv(si, 0)
        return enc(tag, si[s:e] + enc(0xA1, attr))

    return modify(cms, 0, SIGNER_INFO, append)

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sighash":  # sighash CMS ALG: hex digest of the signature value
        print(hashlib.new(args[1], signature_value(open(args[0], "rb").read())).hexdigest())
    elif cmd == "cades":  # cades CMS OUT TOKEN...: CMS with a signature-time-stamp
        cms = open(args[0], "rb").read()
        open(args[1], "wb").write(add_tokens(cms, [open(t, "rb").read() for t in args[2:]]))
    elif cmd == "cut":  # cut IN OUT N: the first N bytes (N < 0: all but -N)
        b = open(args[0], "rb").read()
        open(args[1], "wb").write(b[:int(args[2])])
    elif cmd == "flip":  # flip IN OUT SEED COUNT: COUNT random bytes changed
        b = bytearray(open(args[0], "rb").read())
        rnd = random.Random(int(args[2]))
        for _ in range(int(args[3])):
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        open(args[1], "wb").write(bytes(b))
    elif cmd == "append":  # append IN OUT HEX
        open(args[1], "wb").write(open(args[0], "rb").read() + bytes.fromhex(args[2]))
    else:
        raise SystemExit("der.py: unknown command " + cmd)

main()
PY
der() { python3 der.py "$@"; }

# --- a throw-away PKI: a signer and two TSAs (EC, RSA) -------------------
"$pki_sh" init pki >/dev/null
leaf() { # leaf NAME KEYALG PROFILE CN
  case "$2" in
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null ;;
  esac
  openssl req -new -key "$1.key" -subj "/C=VN/O=Kyso Fuzz/CN=$4" -out "$1.csr"
  "$pki_sh" issue pki "$1.csr" "$1.pem" "$3" >/dev/null
}
leaf signer ec signer "Kyso Fuzz Signer"
leaf tsa-ec ec tsa "Kyso Fuzz TSA EC"
leaf tsa-rsa rsa tsa "Kyso Fuzz TSA RSA"

# --- the fixed CAdES-BES signature fuzz_ts_reply time-stamps -------------
printf '%s\n' "$DOC" > doc.txt
openssl cms -sign -binary -cades -md sha256 -in doc.txt -signer signer.pem -inkey signer.key \
  -certfile pki/chain.pem -outform DER -out signature.p7s
mkdir -p "$here/data"
cp signature.p7s "$here/data/signature.p7s"

# --- TimeStampReqs with our nonce (openssl ts -query picks a random one) --
# genreq OUT ALG HASHHEX [key=value ...]: version=, policy=, nonce=, cert=,
# params= (an ASN1_generate_nconf value, default NULL, "none" to omit), ext=1
genreq() {
  local out=$1 alg=$2 hash=$3
  shift 3
  local version=1 policy="" nonce=$NONCE cert=TRUE params=NULL ext=""
  local kv
  for kv in "$@"; do
    case "$kv" in
      version=*) version=${kv#*=} ;;
      policy=*) policy=${kv#*=} ;;
      nonce=*) nonce=${kv#*=} ;;
      cert=*) cert=${kv#*=} ;;
      params=*) params=${kv#*=} ;;
      ext=*) ext=${kv#*=} ;;
    esac
  done
  {
    echo "asn1 = SEQUENCE:req"
    echo "[req]"
    echo "version = INTEGER:$version"
    echo "imprint = SEQUENCE:imprint"
    [ -n "$policy" ] && echo "policy = OID:$policy"
    [ "$nonce" != none ] && echo "nonce = INTEGER:$nonce"
    [ "$cert" != none ] && echo "cert = BOOLEAN:$cert"
    [ -n "$ext" ] && echo "ext = IMPLICIT:0,SEQUENCE:exts"
    echo "[imprint]"
    echo "alg = SEQUENCE:alg"
    echo "hash = FORMAT:HEX,OCTETSTRING:$hash"
    echo "[alg]"
    echo "oid = OID:$alg"
    [ "$params" != none ] && echo "params = $params"
    echo "[exts]"
    echo "e1 = SEQUENCE:ext1"
    echo "[ext1]"
    echo "oid = OID:1.3.6.1.4.1.99999.9"
    echo "critical = BOOLEAN:TRUE"
    echo "value = FORMAT:HEX,OCTETSTRING:0500"
  } > genreq.cnf
  openssl asn1parse -genconf genreq.cnf -out "$out" >/dev/null
}

SV256=$(der sighash signature.p7s sha256)
SV384=$(der sighash signature.p7s sha384)
SV512=$(der sighash signature.p7s sha512)
SV1=$(der sighash signature.p7s sha1)
OTHER256=$(printf 'another document' | openssl dgst -sha256 -r | cut -d' ' -f1)

# --- openssl's TSA: answers the queries above ---------------------------
echo 01 > serial
cat > ts.cnf <<CNF
[tsa_ec]
serial = ./serial
signer_cert = ./tsa-ec.pem
certs = ./pki/chain.pem
signer_key = ./tsa-ec.key
signer_digest = sha256
default_policy = $POLICY
other_policies = $OTHER_POLICY
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_chain = yes
ess_cert_id_alg = sha256

[tsa_rsa]
serial = ./serial
signer_cert = ./tsa-rsa.pem
certs = ./pki/chain.pem
signer_key = ./tsa-rsa.key
signer_digest = sha256
default_policy = $POLICY
digests = sha256, sha1
accuracy = secs:1
ess_cert_id_alg = sha1
CNF
reply() { # reply SECTION QUERY OUT [-token_out]
  local section=$1 query=$2 out=$3
  shift 3
  openssl ts -reply -config ts.cnf -section "$section" -queryfile "$query" -out "$out" "$@" \
    2>/dev/null
}

genreq q-256.tsq sha256 "$SV256"
genreq q-256-nocert.tsq sha256 "$SV256" cert=none
genreq q-256-nononce.tsq sha256 "$SV256" nonce=none
genreq q-256-policy.tsq sha256 "$SV256" policy=$POLICY
genreq q-256-other.tsq sha256 "$OTHER256"
genreq q-384.tsq sha384 "$SV384"
genreq q-512.tsq sha512 "$SV512"
genreq q-1.tsq sha1 "$SV1"
openssl ts -query -sha256 -digest "$SV256" -cert -out q-random-nonce.tsq 2>/dev/null

R="$here/corpus/ts_reply"
mkdir -p "$R"
rm -f "$R"/seed-*
reply tsa_ec q-256.tsq "$R/seed-granted-ec.tsr"
reply tsa_rsa q-256.tsq "$R/seed-granted-rsa.tsr"
reply tsa_ec q-256-nocert.tsq "$R/seed-granted-nocert.tsr"
reply tsa_ec q-256-nononce.tsq "$R/seed-granted-nononce.tsr"
reply tsa_ec q-256-policy.tsq "$R/seed-granted-policy.tsr"
reply tsa_ec q-random-nonce.tsq "$R/seed-granted-other-nonce.tsr"
reply tsa_ec q-256-other.tsq "$R/seed-granted-other-digest.tsr"
reply tsa_ec q-384.tsq "$R/seed-granted-sha384.tsr"
reply tsa_ec q-1.tsq "$R/seed-rejected-badalg.tsr"
genreq q-256-otherpolicy.tsq sha256 "$SV256" policy=1.3.6.1.4.1.99999.1.3
reply tsa_ec q-256-otherpolicy.tsq "$R/seed-rejected-policy.tsr"
printf 'not a request' > q-garbage.tsq
reply tsa_ec q-garbage.tsq "$R/seed-rejected-format.tsr"
# Bare tokens: what signer_cms_add_timestamp and CAdES-T verification take.
reply tsa_ec q-256.tsq tok-ec.tst -token_out
reply tsa_rsa q-256.tsq tok-rsa.tst -token_out
reply tsa_ec q-256-nocert.tsq tok-nocert.tst -token_out
reply tsa_ec q-384.tsq tok-384.tst -token_out
reply tsa_ec q-512.tsq tok-512.tst -token_out
reply tsa_rsa q-1.tsq tok-sha1.tst -token_out
reply tsa_ec q-256-other.tsq tok-other.tst -token_out
for t in ec rsa nocert 384 512 sha1 other; do cp "tok-$t.tst" "$R/seed-token-$t.tst"; done
cp tok-ec.tst "$here/data/token.tst" # the token fuzz_ts_reply adds to its input
# CMS inputs: the signature, and CAdES-T signatures made from it.
cp signature.p7s "$R/seed-cms-bes.p7s"
der cades signature.p7s "$R/seed-cms-t-ec.p7s" tok-ec.tst
der cades signature.p7s "$R/seed-cms-t-384.p7s" tok-384.tst
der cades signature.p7s "$R/seed-cms-t-two.p7s" tok-ec.tst tok-512.tst
der cades signature.p7s "$R/seed-cms-t-other.p7s" tok-other.tst
der cades signature.p7s "$R/seed-cms-t-sha1.p7s" tok-sha1.tst
# Broken variants.
der cut "$R/seed-granted-ec.tsr" "$R/seed-cut-reply-half.tsr" 600
der cut "$R/seed-granted-ec.tsr" "$R/seed-cut-reply-end.tsr" -1
der cut tok-ec.tst "$R/seed-cut-token.tst" -40
der append tok-ec.tst "$R/seed-token-trailing.tst" 0000
der cut "$R/seed-cms-t-ec.p7s" "$R/seed-cut-cms-t.p7s" -200
for s in 1 2 3; do
  der flip "$R/seed-granted-ec.tsr" "$R/seed-flip-reply-$s.tsr" "$s" 3
  der flip tok-ec.tst "$R/seed-flip-token-$s.tst" "$((s + 10))" 2
done

# --- ts_query: requests for the responder -------------------------------
Q="$here/corpus/ts_query"
mkdir -p "$Q"
rm -f "$Q"/seed-*
printf '%s' "$DOC" > data.txt
query() { openssl ts -query -data data.txt "$@" 2>/dev/null; }
query -sha256 -cert -out "$Q/seed-sha256-cert.tsq"
query -sha256 -out "$Q/seed-sha256.tsq"
query -sha384 -cert -out "$Q/seed-sha384.tsq"
query -sha512 -no_nonce -out "$Q/seed-sha512-nononce.tsq"
query -sha1 -out "$Q/seed-sha1.tsq"
query -md5 -out "$Q/seed-md5.tsq"
query -sha256 -tspolicy "$POLICY" -cert -out "$Q/seed-policy.tsq"
query -sha256 -tspolicy "$OTHER_POLICY" -out "$Q/seed-other-policy.tsq"
cp q-256.tsq "$Q/seed-fixed-nonce.tsq"
genreq "$Q/seed-version2.tsq" sha256 "$SV256" version=2
genreq "$Q/seed-short-digest.tsq" sha256 "$SV1"
genreq "$Q/seed-params-absent.tsq" sha384 "$SV384" params=none
genreq "$Q/seed-params-int.tsq" sha256 "$SV256" params=INTEGER:7
genreq "$Q/seed-extension.tsq" sha256 "$SV256" ext=1
genreq "$Q/seed-nonce-negative.tsq" sha256 "$SV256" nonce=-5
genreq "$Q/seed-nonce-large.tsq" sha256 "$SV256" nonce=0x0123456789ABCDEF0123456789ABCDEF01
genreq "$Q/seed-cert-false.tsq" sha512 "$SV512" cert=FALSE
genreq "$Q/seed-unknown-alg.tsq" 1.3.6.1.4.1.99999.7 "$SV256"
der append q-256.tsq "$Q/seed-trailing.tsq" 3000
der cut q-256.tsq "$Q/seed-cut.tsq" -3
printf '' > "$Q/seed-empty.tsq"
for s in 1 2 3; do der flip q-256.tsq "$Q/seed-flip-$s.tsq" "$((s + 20))" 2; done

# --- tsa_state: the state file, as tsa_state.c writes it, and damaged ---
S="$here/corpus/tsa_state"
mkdir -p "$S"
rm -f "$S"/seed-*
state() { # state OUT NODE NEXT BOUND: what save() writes
  printf '%s\n' "# kyso TSA state: no serial at or above next_counter and no genTime above" \
    "# time_bound_ms was issued. It is this node's alone: never copy it to" \
    "# another node or restore it from a backup." \
    "node_id=$2" "next_counter=$3" "time_bound_ms=$4" > "$1"
}
# The fuzzer's clock reads 1700000000000 ms (fuzz_tsa_state.c).
state "$S/seed-fresh" 7 1 0
state "$S/seed-running" 7 4097 1699999999000
state "$S/seed-ahead" 7 8193 1700000005000
state "$S/seed-other-node" 3 12289 1700000000000
state "$S/seed-last-block" 7 281474976710000 1600000000000
state "$S/seed-last-serial" 7 281474976710655 1600000000000
state "$S/seed-exhausted" 7 281474976710656 1600000000000
state "$S/seed-max-time" 65535 42 253402300799999
state "$S/seed-over-max" 7 281474976710657 253402300800000
der cut "$S/seed-running" "$S/seed-no-newline" -1
der append "$S/seed-running" "$S/seed-repeat" 6e6f64655f69643d380a       # node_id=8
der append "$S/seed-running" "$S/seed-unknown-key" 6c656173653d310a      # lease=1
sed '/^next_counter/d' "$S/seed-running" > "$S/seed-missing-key"
sed 's/^time_bound_ms=/time_bound_ms=+/' "$S/seed-running" > "$S/seed-plus-sign"
sed 's/$/\r/' "$S/seed-running" > "$S/seed-crlf"
sed 's/^node_id=7/node_id=0/' "$S/seed-running" > "$S/seed-node-zero"
printf '' > "$S/seed-empty" # to fuzz_tsa_state: no file at all, a new node

for d in "$R" "$Q" "$S"; do
  echo "$(basename "$d"): $(find "$d" -type f | wc -l) files, $(cat "$d"/* | wc -c) bytes"
done
