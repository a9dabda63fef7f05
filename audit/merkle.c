/* kyso — RFC 9162 section 2.1 Merkle trees over leaf hashes read by index. */
#include "kyso/merkle.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

static void sha256_parts(const uint8_t prefix, const uint8_t *a, size_t a_len, const uint8_t *b,
                         size_t b_len, merkle_hash out) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  unsigned len = 0;
  /* Allocation is the only way these fail; a zero hash then matches nothing. */
  if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
      EVP_DigestUpdate(ctx, &prefix, 1) != 1 || (a_len && EVP_DigestUpdate(ctx, a, a_len) != 1) ||
      (b_len && EVP_DigestUpdate(ctx, b, b_len) != 1) || EVP_DigestFinal_ex(ctx, out, &len) != 1)
    memset(out, 0, MERKLE_HASH_SIZE);
  EVP_MD_CTX_free(ctx);
}

void merkle_leaf_hash(const uint8_t *data, size_t len, merkle_hash out) {
  sha256_parts(0x00, data, len, NULL, 0, out);
}

void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out) {
  sha256_parts(0x01, left, MERKLE_HASH_SIZE, right, MERKLE_HASH_SIZE, out);
}

/* The largest power of two smaller than n (n > 1): the split of 2.1.1. */
static uint64_t split(uint64_t n) { return (uint64_t)1 << (63 - __builtin_clzll(n - 1)); }

/* MTH(D[start:start+size]), size >= 1; recursion depth log2(size). */
static kyso_status subtree(merkle_leaf_fn leaf, void *ctx, uint64_t start, uint64_t size,
                           merkle_hash out, kyso_err *err) {
  if (size == 1) return leaf(ctx, start, out, err);
  merkle_hash l, r;
  uint64_t k = split(size);
  kyso_status st = subtree(leaf, ctx, start, k, l, err);
  if (st == KYSO_OK) st = subtree(leaf, ctx, start + k, size - k, r, err);
  if (st == KYSO_OK) merkle_node_hash(l, r, out);
  return st;
}

kyso_status merkle_root(merkle_leaf_fn leaf, void *ctx, uint64_t n, merkle_hash out,
                        kyso_err *err) {
  if (n == 0) {
    unsigned len = 0;
    return EVP_Digest("", 0, out, &len, EVP_sha256(), NULL) == 1
               ? KYSO_OK
               : kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed");
  }
  return subtree(leaf, ctx, 0, n, out, err);
}

/* The hashes were pushed root first; a proof lists them leaf first. */
static void reverse(merkle_hash *path, size_t len) {
  for (size_t i = 0; i < len / 2; i++) {
    merkle_hash t;
    memcpy(t, path[i], MERKLE_HASH_SIZE);
    memcpy(path[i], path[len - 1 - i], MERKLE_HASH_SIZE);
    memcpy(path[len - 1 - i], t, MERKLE_HASH_SIZE);
  }
}

kyso_status merkle_inclusion_proof(merkle_leaf_fn leaf, void *ctx, uint64_t index, uint64_t n,
                                   merkle_hash path[MERKLE_MAX_PROOF], size_t *len,
                                   kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint64_t start = 0, size = n;
  *len = 0;
  if (index >= n)
    return kyso_fail(err, KYSO_OUT_OF_RANGE,
                     "leaf %llu is not in a tree of %llu leaves (indexes start at 0)",
                     (unsigned long long)index, (unsigned long long)n);
  /* 2.1.3.1: at each level the sibling subtree's head, from the root down. */
  while (size > 1 && st == KYSO_OK) {
    uint64_t k = split(size);
    if (index - start < k) {
      st = subtree(leaf, ctx, start + k, size - k, path[(*len)++], err);
      size = k;
    } else {
      st = subtree(leaf, ctx, start, k, path[(*len)++], err);
      start += k;
      size -= k;
    }
  }
  if (st == KYSO_OK) reverse(path, *len);
  return st;
}

kyso_status merkle_consistency_proof(merkle_leaf_fn leaf, void *ctx, uint64_t m, uint64_t n,
                                     merkle_hash path[MERKLE_MAX_PROOF], size_t *len,
                                     kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint64_t start = 0, size = n;
  int whole = 1; /* b of SUBPROOF: the subtree is the old tree's head itself */
  *len = 0;
  if (m == 0 || m > n)
    return kyso_fail(err, KYSO_OUT_OF_RANGE,
                     "no consistency proof from %llu to %llu leaves (want 0 < old <= new)",
                     (unsigned long long)m, (unsigned long long)n);
  /* 2.1.4.1, SUBPROOF(m, D[start:start+size], whole), unrolled. */
  while (m != size && st == KYSO_OK) {
    uint64_t k = split(size);
    if (m <= k) {
      st = subtree(leaf, ctx, start + k, size - k, path[(*len)++], err);
      size = k;
    } else {
      st = subtree(leaf, ctx, start, k, path[(*len)++], err);
      start += k;
      m -= k;
      size -= k;
      whole = 0;
    }
  }
  if (st == KYSO_OK && !whole && size > 0) st = subtree(leaf, ctx, start, size, path[(*len)++], err);
  if (st == KYSO_OK) reverse(path, *len);
  return st;
}

static int same(const merkle_hash a, const merkle_hash b) {
  return CRYPTO_memcmp(a, b, MERKLE_HASH_SIZE) == 0;
}

kyso_status merkle_verify_inclusion(uint64_t index, uint64_t n, const merkle_hash leaf_hash,
                                    const merkle_hash *path, size_t len, const merkle_hash root,
                                    kyso_err *err) {
  if (index >= n)
    return kyso_fail(err, KYSO_UNAUTHENTICATED, "leaf %llu is beyond the tree's %llu leaves",
                     (unsigned long long)index, (unsigned long long)n);
  uint64_t fn = index, sn = n - 1;
  merkle_hash r;
  memcpy(r, leaf_hash, MERKLE_HASH_SIZE);
  for (size_t i = 0; i < len; i++) {
    if (sn == 0)
      return kyso_fail(err, KYSO_UNAUTHENTICATED,
                       "the inclusion proof of leaf %llu has %zu hashes, more than the tree has "
                       "levels",
                       (unsigned long long)index, len);
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(path[i], r, r);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      merkle_node_hash(r, path[i], r);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the inclusion proof of leaf %llu is too short for a tree of %llu leaves",
                     (unsigned long long)index, (unsigned long long)n);
  if (!same(r, root))
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "leaf %llu is not in the tree of %llu leaves with that root (the proof "
                     "leads to another root)",
                     (unsigned long long)index, (unsigned long long)n);
  return KYSO_OK;
}

kyso_status merkle_verify_consistency(uint64_t m, uint64_t n, const merkle_hash root_m,
                                      const merkle_hash root_n, const merkle_hash *path,
                                      size_t len, kyso_err *err) {
  if (m == 0 || m > n)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "no consistency between %llu and %llu leaves (want 0 < old <= new)",
                     (unsigned long long)m, (unsigned long long)n);
  if (m == n) {
    if (len == 0 && same(root_m, root_n)) return KYSO_OK;
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "two trees of %llu leaves with different roots: the log was rewritten",
                     (unsigned long long)m);
  }
  if (len == 0 || len > MERKLE_MAX_PROOF)
    return kyso_fail(err, KYSO_UNAUTHENTICATED, "a consistency proof of %zu hashes", len);
  /* 2.1.4.2: an old tree that is a perfect subtree starts from its own head. */
  int own = (m & (m - 1)) == 0;
  uint64_t fn = m - 1, sn = n - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  merkle_hash fr, sr;
  memcpy(fr, own ? root_m : path[0], MERKLE_HASH_SIZE);
  memcpy(sr, fr, MERKLE_HASH_SIZE);
  for (size_t i = own ? 0 : 1; i < len; i++) {
    if (sn == 0)
      return kyso_fail(err, KYSO_UNAUTHENTICATED,
                       "the consistency proof from %llu to %llu leaves is too long",
                       (unsigned long long)m, (unsigned long long)n);
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(path[i], fr, fr);
      merkle_node_hash(path[i], sr, sr);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      merkle_node_hash(sr, path[i], sr);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the consistency proof from %llu to %llu leaves is too short",
                     (unsigned long long)m, (unsigned long long)n);
  if (!same(fr, root_m))
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the proof does not lead to the old root of %llu leaves: the first %llu "
                     "entries were changed or removed",
                     (unsigned long long)m, (unsigned long long)m);
  if (!same(sr, root_n))
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the proof does not lead to the new root of %llu leaves",
                     (unsigned long long)n);
  return KYSO_OK;
}
