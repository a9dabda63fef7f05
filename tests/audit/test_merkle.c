/* audit/merkle.c: RFC 9162 2.1 trees. Known roots from the RFC 6962 test
 * data, every inclusion and consistency proof of trees up to 70 leaves
 * verified, and every one-hash change of a proof refused. With --dump FILE
 * it writes trees and proofs as JSON lines for rfc9162_check.py, an
 * implementation that shares no code with this one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "kyso/merkle.h"
#include "kyso/util.h"

/* Leaf i's data: the RFC 6962 test leaves for i < 8, then i's bytes. */
static size_t leaf_data(uint64_t i, uint8_t *buf) {
  static const char *const hex[] = {"", "00", "10", "2021", "3031", "40414243",
                                    "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
  if (i < 8) {
    size_t n = strlen(hex[i]) / 2;
    for (size_t k = 0; k < n; k++) sscanf(hex[i] + 2 * k, "%2hhx", &buf[k]);
    return n;
  }
  memcpy(buf, &i, sizeof(i));
  return sizeof(i);
}

static unsigned long leaf_calls;

static kyso_status leaf(void *ctx, uint64_t index, merkle_hash out, kyso_err *err) {
  (void)ctx;
  (void)err;
  uint8_t buf[32];
  leaf_calls++;
  merkle_leaf_hash(buf, leaf_data(index, buf), out);
  return KYSO_OK;
}

static kyso_status broken_leaf(void *ctx, uint64_t index, merkle_hash out, kyso_err *err) {
  (void)ctx;
  if (index == 5) return kyso_fail(err, KYSO_DATA_LOSS, "leaf 5 is unreadable");
  return leaf(NULL, index, out, err);
}

static void root_hex(uint64_t n, char *hex) {
  merkle_hash r;
  kyso_err err = {0};
  assert_int_equal(merkle_root(leaf, NULL, n, r, &err), KYSO_OK);
  kyso_hex(r, 32, hex);
}

static void test_known_roots(void **state) {
  (void)state;
  /* The roots of the RFC 6962 reference test data, trees of 0..8 leaves. */
  static const char *const want[] = {
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  for (uint64_t n = 0; n <= 8; n++) {
    char hex[65];
    root_hex(n, hex);
    if (strcmp(hex, want[n]) != 0) fail_msg("root of %llu leaves: %s, want %s",
                                            (unsigned long long)n, hex, want[n]);
  }
}

/* Every proof of every tree up to 70 leaves verifies; each one-hash
 * change, a wrong index, the next tree's root or a dropped hash is refused. */
static void test_all_small_trees(void **state) {
  (void)state;
  merkle_hash roots[72], path[MERKLE_MAX_PROOF];
  kyso_err err = {0};
  size_t len;
  for (uint64_t n = 0; n <= 71; n++) assert_int_equal(merkle_root(leaf, NULL, n, roots[n], &err), 0);
  for (uint64_t n = 1; n <= 70; n++) {
    for (uint64_t i = 0; i < n; i++) {
      merkle_hash lh;
      leaf(NULL, i, lh, &err);
      assert_int_equal(merkle_inclusion_proof(leaf, NULL, i, n, path, &len, &err), KYSO_OK);
      if (merkle_verify_inclusion(i, n, lh, (const merkle_hash *)path, len, roots[n], &err))
        fail_msg("inclusion of %llu in %llu: %s", (unsigned long long)i, (unsigned long long)n,
                 err.msg);
      for (size_t k = 0; k < len; k++) {
        path[k][k % 32] ^= 1;
        assert_int_not_equal(
            merkle_verify_inclusion(i, n, lh, (const merkle_hash *)path, len, roots[n], &err), 0);
        path[k][k % 32] ^= 1;
      }
      if (n > 1)
        assert_int_not_equal(merkle_verify_inclusion((i + 1) % n, n, lh, (const merkle_hash *)path,
                                                     len, roots[n], &err),
                             0);
      /* The same path against the next tree's root. */
      assert_int_not_equal(
          merkle_verify_inclusion(i, n + 1, lh, (const merkle_hash *)path, len, roots[n + 1], &err),
          0);
      if (len > 0)
        assert_int_not_equal(
            merkle_verify_inclusion(i, n, lh, (const merkle_hash *)path, len - 1, roots[n], &err),
            0);
    }
    for (uint64_t m = 1; m <= n; m++) {
      assert_int_equal(merkle_consistency_proof(leaf, NULL, m, n, path, &len, &err), KYSO_OK);
      if (merkle_verify_consistency(m, n, roots[m], roots[n], (const merkle_hash *)path, len, &err))
        fail_msg("consistency %llu -> %llu: %s", (unsigned long long)m, (unsigned long long)n,
                 err.msg);
      for (size_t k = 0; k < len; k++) {
        path[k][31] ^= 0x80;
        assert_int_not_equal(merkle_verify_consistency(m, n, roots[m], roots[n],
                                                       (const merkle_hash *)path, len, &err),
                             0);
        path[k][31] ^= 0x80;
      }
      /* Another old tree (one leaf changed, or fewer leaves) is not consistent. */
      if (m < n && m > 1)
        assert_int_not_equal(merkle_verify_consistency(m, n, roots[m - 1], roots[n],
                                                       (const merkle_hash *)path, len, &err),
                             0);
    }
  }
}

static void test_bad_requests(void **state) {
  (void)state;
  merkle_hash path[MERKLE_MAX_PROOF], r;
  size_t len = 99;
  kyso_err err = {0};
  assert_int_equal(merkle_inclusion_proof(leaf, NULL, 5, 5, path, &len, &err), KYSO_OUT_OF_RANGE);
  assert_int_equal(len, 0);
  assert_int_equal(merkle_consistency_proof(leaf, NULL, 0, 5, path, &len, &err), KYSO_OUT_OF_RANGE);
  assert_int_equal(merkle_consistency_proof(leaf, NULL, 6, 5, path, &len, &err), KYSO_OUT_OF_RANGE);
  /* A leaf the log cannot read: its status comes back, no proof made. */
  assert_int_equal(merkle_root(broken_leaf, NULL, 9, r, &err), KYSO_DATA_LOSS);
  assert_non_null(strstr(err.msg, "leaf 5"));
  assert_int_equal(merkle_inclusion_proof(broken_leaf, NULL, 0, 9, path, &len, &err),
                   KYSO_DATA_LOSS);
}

/* A proof reads O(log n) subtrees, each once, not the tree again per level: for a
 * tree of 200,003 leaves, fewer leaf reads than leaves (each subtree once). */
static void test_large_tree_reads(void **state) {
  (void)state;
  merkle_hash path[MERKLE_MAX_PROOF], root, lh;
  size_t len;
  kyso_err err = {0};
  uint64_t n = 200003;
  assert_int_equal(merkle_root(leaf, NULL, n, root, &err), KYSO_OK);
  leaf_calls = 0;
  assert_int_equal(merkle_inclusion_proof(leaf, NULL, 177777, n, path, &len, &err), KYSO_OK);
  assert_true(leaf_calls < n);
  assert_true(len <= 21);
  leaf(NULL, 177777, lh, &err);
  assert_int_equal(merkle_verify_inclusion(177777, n, lh, (const merkle_hash *)path, len, root,
                                           &err),
                   KYSO_OK);
}

static void print_hex_array(FILE *f, const merkle_hash *path, size_t len) {
  fputc('[', f);
  for (size_t k = 0; k < len; k++) {
    char hex[65];
    kyso_hex(path[k], 32, hex);
    fprintf(f, "%s\"%s\"", k ? "," : "", hex);
  }
  fputc(']', f);
}

/* JSON lines: each tree's leaves, root, and some proofs. */
static int dump(const char *file) {
  FILE *f = fopen(file, "w");
  kyso_err err = {0};
  if (f == NULL) return 1;
  for (uint64_t n = 1; n <= 40; n++) {
    merkle_hash root, path[MERKLE_MAX_PROOF];
    size_t len;
    char hex[65];
    if (merkle_root(leaf, NULL, n, root, &err) != KYSO_OK) return 1;
    kyso_hex(root, 32, hex);
    fprintf(f, "{\"size\":%llu,\"root\":\"%s\",\"leaves\":[", (unsigned long long)n, hex);
    for (uint64_t i = 0; i < n; i++) {
      uint8_t buf[32];
      size_t l = leaf_data(i, buf);
      char data[65];
      kyso_hex(buf, l, data);
      fprintf(f, "%s\"%s\"", i ? "," : "", data);
    }
    fprintf(f, "],\"inclusion\":[");
    for (uint64_t i = 0; i < n; i++) {
      if (merkle_inclusion_proof(leaf, NULL, i, n, path, &len, &err) != KYSO_OK) return 1;
      fprintf(f, "%s{\"index\":%llu,\"path\":", i ? "," : "", (unsigned long long)i);
      print_hex_array(f, (const merkle_hash *)path, len);
      fputc('}', f);
    }
    fprintf(f, "],\"consistency\":[");
    for (uint64_t m = 1; m <= n; m++) {
      if (merkle_consistency_proof(leaf, NULL, m, n, path, &len, &err) != KYSO_OK) return 1;
      fprintf(f, "%s{\"old_size\":%llu,\"path\":", m > 1 ? "," : "", (unsigned long long)m);
      print_hex_array(f, (const merkle_hash *)path, len);
      fputc('}', f);
    }
    fprintf(f, "]}\n");
  }
  return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_roots),
      cmocka_unit_test(test_all_small_trees),
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_large_tree_reads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
