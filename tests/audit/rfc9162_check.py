#!/usr/bin/env python3
"""An independent RFC 9162 (section 2.1) implementation, written from the
RFC's text and sharing no code with kyso's audit/merkle.c. It reads the
JSON lines `test_merkle --dump` writes and checks, for every tree: the
root (MTH) recomputed from the leaf data, every inclusion proof (equal to
PATH(m, D[n]) computed here, and accepted by the verifier of 2.1.3.2), and
every consistency proof (equal to PROOF(m, D[n]), and accepted by the
verifier of 2.1.4.2); then that a changed hash is refused."""
import hashlib
import json
import sys


def H(b):
    return hashlib.sha256(b).digest()


def mth(d):
    if len(d) == 0:
        return H(b"")
    if len(d) == 1:
        return H(b"\x00" + d[0])
    k = 1
    while k * 2 < len(d):
        k *= 2
    return H(b"\x01" + mth(d[:k]) + mth(d[k:]))


def k_of(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def path(m, d):
    if len(d) <= 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def verify_inclusion(index, size, leaf_hash, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = H(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = H(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, proof):
    if first == second:
        return proof == [] and first_hash == second_hash
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = H(b"\x01" + c + fr)
            sr = H(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = H(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def main():
    trees = checked = 0
    roots = {}
    lines = [json.loads(l) for l in open(sys.argv[1], encoding="ascii")]
    for t in lines:
        d = [bytes.fromhex(x) for x in t["leaves"]]
        roots[len(d)] = mth(d)
    for t in lines:
        d = [bytes.fromhex(x) for x in t["leaves"]]
        n = t["size"]
        assert len(d) == n, f"tree {n}: {len(d)} leaves"
        root = bytes.fromhex(t["root"])
        assert root == roots[n], f"tree {n}: kyso's root differs from MTH"
        for p in t["inclusion"]:
            i, got = p["index"], [bytes.fromhex(x) for x in p["path"]]
            assert got == path(i, d), f"tree {n}, leaf {i}: kyso's path differs from PATH"
            lh = H(b"\x00" + d[i])
            assert verify_inclusion(i, n, lh, got, root), f"tree {n}, leaf {i}: refused"
            for k in range(len(got)):
                bad = list(got)
                bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
                assert not verify_inclusion(i, n, lh, bad, root), f"tree {n}, leaf {i}: forged"
            checked += 1
        for p in t["consistency"]:
            m, got = p["old_size"], [bytes.fromhex(x) for x in p["path"]]
            want = subproof(m, d, True) if m < n else []
            assert got == want, f"{m} -> {n}: kyso's proof differs from PROOF"
            assert verify_consistency(m, n, roots[m], root, got), f"{m} -> {n}: refused"
            for k in range(len(got)):
                bad = list(got)
                bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
                assert not verify_consistency(m, n, roots[m], root, bad), f"{m} -> {n}: forged"
            checked += 1
        trees += 1
    if trees == 0:
        sys.exit("rfc9162_check: no trees in " + sys.argv[1])
    print(f"rfc9162_check: {trees} trees, {checked} proofs made by kyso agree with RFC 9162")


if __name__ == "__main__":
    main()
