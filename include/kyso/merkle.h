/* kyso — the audit log's Merkle tree (RFC 9162, section 2.1): leaf and
 * node hashes, the tree head over n leaves, inclusion and consistency
 * proofs, and their verification. The leaves stay where the log keeps
 * them: every computation asks for leaf hashes by index, so a proof over
 * millions of entries needs O(log n) memory. */
#ifndef KYSO_MERKLE_H
#define KYSO_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

#define MERKLE_HASH_SIZE 32
/* A proof has at most one hash per level of a 2^64-leaf tree. */
#define MERKLE_MAX_PROOF 64

typedef uint8_t merkle_hash[MERKLE_HASH_SIZE];

/* SHA-256(0x00 || data) and SHA-256(0x01 || left || right). */
void merkle_leaf_hash(const uint8_t *data, size_t len, merkle_hash out);
void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out);

/* Where the leaves are: the hash of leaf index, or a status (with err) if
 * it cannot be read. */
typedef kyso_status (*merkle_leaf_fn)(void *ctx, uint64_t index, merkle_hash out, kyso_err *err);

/* MTH(D[0:n]): the tree head of the first n leaves (SHA-256 of "" for n = 0). */
kyso_status merkle_root(merkle_leaf_fn leaf, void *ctx, uint64_t n, merkle_hash out,
                        kyso_err *err) KYSO_MUST_CHECK;
/* PATH(index, D[0:n]), leaf to root, *len hashes. OUT_OF_RANGE unless index < n. */
kyso_status merkle_inclusion_proof(merkle_leaf_fn leaf, void *ctx, uint64_t index, uint64_t n,
                                   merkle_hash path[MERKLE_MAX_PROOF], size_t *len,
                                   kyso_err *err) KYSO_MUST_CHECK;
/* PROOF(m, D[0:n]); empty for m = n. OUT_OF_RANGE unless 0 < m <= n. */
kyso_status merkle_consistency_proof(merkle_leaf_fn leaf, void *ctx, uint64_t m, uint64_t n,
                                     merkle_hash path[MERKLE_MAX_PROOF], size_t *len,
                                     kyso_err *err) KYSO_MUST_CHECK;

/* RFC 9162 2.1.3.2: OK when path proves leaf_hash is leaf index of the
 * tree of size n with that root; else UNAUTHENTICATED saying why. */
kyso_status merkle_verify_inclusion(uint64_t index, uint64_t n, const merkle_hash leaf_hash,
                                    const merkle_hash *path, size_t len, const merkle_hash root,
                                    kyso_err *err) KYSO_MUST_CHECK;
/* RFC 9162 2.1.4.2: OK when path proves the tree of size n (root_n) only
 * appended to the tree of size m (root_m); m = n needs an empty path and
 * equal roots. */
kyso_status merkle_verify_consistency(uint64_t m, uint64_t n, const merkle_hash root_m,
                                      const merkle_hash root_n, const merkle_hash *path,
                                      size_t len, kyso_err *err) KYSO_MUST_CHECK;

#endif
