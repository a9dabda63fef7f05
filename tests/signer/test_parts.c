/* kyso tests — the signer's small parts, one table per behaviour: ECDSA
 * r||s to DER, the DER size bound, subject parsing, certificate file names,
 * the label map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "signer_internal.h"

/* r||s halves built from a pattern: first byte, then `zeros` leading zero
 * bytes replaced, the rest 0x5a. */
static void fill_half(uint8_t *h, size_t n, int zeros, uint8_t first) {
  memset(h, 0x5a, n);
  for (int i = 0; i < zeros && (size_t)i < n; i++) h[i] = 0;
  if ((size_t)zeros < n) h[zeros] = first;
}

static void test_ecdsa_raw_to_der(void **state) {
  static const struct {
    const char *name;
    int r_zeros, s_zeros;
    uint8_t r_first, s_first;
    size_t want_len; /* DER length for P-256 halves */
  } cases[] = {
      {"both short of the top bit", 0, 0, 0x12, 0x34, 70},
      {"r top bit set: 0x00 pad", 0, 0, 0x80, 0x34, 71},
      {"both top bits set", 0, 0, 0xff, 0xff, 72},
      {"r one leading zero byte", 1, 0, 0x12, 0x34, 69},
      {"r leading zero then top bit", 1, 0, 0x80, 0x34, 70},
      {"s 31 leading zero bytes", 0, 31, 0x12, 0x01, 39},
      {"both tiny", 31, 31, 0x01, 0x7f, 8},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t raw[64], der[80];
    size_t der_len = 0;
    fill_half(raw, 32, cases[i].r_zeros, cases[i].r_first);
    fill_half(raw + 32, 32, cases[i].s_zeros, cases[i].s_first);
    int ok = signer__ecdsa_raw_to_der(raw, sizeof(raw), der, sizeof(der), &der_len);
    if (!ok || der_len != cases[i].want_len)
      fail_msg("%s: got ok=%d len=%zu, want len %zu", cases[i].name, ok, der_len,
               cases[i].want_len);
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    assert_non_null(sig);
    assert_ptr_equal(p, der + der_len);
    uint8_t back[64];
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), back, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), back + 32, 32), 32);
    if (memcmp(back, raw, 64) != 0) fail_msg("%s: r||s does not round-trip", cases[i].name);
    /* Re-encoding the parsed value must give the same bytes: minimal DER. */
    unsigned char *re = NULL;
    int rn = i2d_ECDSA_SIG(sig, &re);
    assert_int_equal(rn, (int)der_len);
    assert_memory_equal(re, der, der_len);
    OPENSSL_free(re);
    ECDSA_SIG_free(sig);
  }
}

static void test_ecdsa_raw_to_der_rejects(void **state) {
  uint8_t raw[64], der[80];
  size_t der_len = 0;
  memset(raw, 0x11, sizeof(raw));
  static const struct {
    const char *name;
    size_t raw_len, cap;
    int zero_r, zero_s;
  } cases[] = {
      {"odd length", 63, 80, 0, 0},
      {"empty", 0, 80, 0, 0},
      {"r is zero", 64, 80, 1, 0},
      {"s is zero", 64, 80, 0, 1},
      {"buffer too small", 64, 69, 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    memset(raw, 0x11, sizeof(raw));
    if (cases[i].zero_r) memset(raw, 0, 32);
    if (cases[i].zero_s) memset(raw + 32, 0, 32);
    if (signer__ecdsa_raw_to_der(raw, cases[i].raw_len, der, cases[i].cap, &der_len))
      fail_msg("%s: got success, want failure", cases[i].name);
    assert_int_not_equal(ERR_peek_error(), 0);
    ERR_clear_error();
  }
}

/* Our bound must equal OpenSSL's own ECDSA size for each curve. */
static void test_ecdsa_der_max(void **state) {
  static const struct {
    const char *curve;
    int bits;
  } cases[] = {{"P-256", 256}, {"P-384", 384}, {"P-521", 521}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    EVP_PKEY *k = EVP_EC_gen(cases[i].curve);
    assert_non_null(k);
    int want = EVP_PKEY_get_size(k), got = signer__ecdsa_der_max(cases[i].bits);
    if (got != want) fail_msg("%s: got %d, want %d", cases[i].curve, got, want);
    EVP_PKEY_free(k);
  }
}

static void test_subject_parse(void **state) {
  static const struct {
    const char *in;
    kyso_status want;
    const char *want_text; /* RFC 2253, UTF-8, when OK */
  } cases[] = {
      {"/C=VN/O=UBND tỉnh Đồng Nai/CN=Nguyễn Văn A", KYSO_OK,
       "CN=Nguyễn Văn A,O=UBND tỉnh Đồng Nai,C=VN"},
      {"/CN=a\\/b", KYSO_OK, "CN=a/b"},
      {"/CN=x+y", KYSO_OK, "CN=x\\+y"},
      {"/OU=one/OU=two/CN=seal", KYSO_OK, "CN=seal,OU=two,OU=one"},
      {"/2.5.4.3=by oid", KYSO_OK, "CN=by oid"},
      {"", KYSO_INVALID_ARGUMENT, NULL},
      {"CN=no slash", KYSO_INVALID_ARGUMENT, NULL},
      {"/", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=a/", KYSO_INVALID_ARGUMENT, NULL},
      {"/=x", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN", KYSO_INVALID_ARGUMENT, NULL},
      {"/XX=unknown type", KYSO_INVALID_ARGUMENT, NULL},
      {"/C=VNM", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=tab\there", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=bad \xc3\x28 utf8", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=overlong \xc0\xaf", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=surrogate \xed\xa0\x80", KYSO_INVALID_ARGUMENT, NULL},
      {"/CN=trailing\\", KYSO_INVALID_ARGUMENT, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    X509_NAME *name = NULL;
    kyso_err err = {0};
    kyso_status got = signer__subject_parse(cases[i].in, &name, &err);
    if (got != cases[i].want)
      fail_msg("subject \"%s\": got %s (%s), want %s", cases[i].in, kyso_strerror(got), err.msg,
               kyso_strerror(cases[i].want));
    if (got == KYSO_OK) {
      char buf[512];
      BIO *b = BIO_new(BIO_s_mem());
      X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
      int n = BIO_read(b, buf, sizeof(buf) - 1);
      buf[n > 0 ? n : 0] = '\0';
      BIO_free(b);
      if (strcmp(buf, cases[i].want_text) != 0)
        fail_msg("subject \"%s\": got \"%s\", want \"%s\"", cases[i].in, buf,
                 cases[i].want_text);
    } else {
      assert_null(name);
      assert_true(err.msg[0] != '\0');
    }
    X509_NAME_free(name);
    ERR_clear_error();
  }
  /* Over the limit. */
  char big[KYSO_MAX_SUBJECT + 8];
  memset(big, 'a', sizeof(big) - 1);
  memcpy(big, "/CN=", 4);
  big[sizeof(big) - 1] = '\0';
  X509_NAME *name = NULL;
  assert_int_equal(signer__subject_parse(big, &name, NULL), KYSO_INVALID_ARGUMENT);
}

static void test_cert_file_name(void **state) {
  static const struct {
    const char *label, *want;
  } cases[] = {
      {"user-0042", "user-0042.pem"},
      {"seal-H37.DN.001", "seal-H37.DN.001.pem"},
      {"..", "%2E..pem"},
      {".hidden", "%2Ehidden.pem"},
      {"../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd.pem"},
      {"a b/c%d", "a%20b%2Fc%25d.pem"},
      {"~x", "%7Ex.pem"},
  };
  char out[SIGNER__FILE_NAME_MAX + 1];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_int_equal(signer__cert_file_name(cases[i].label, out, NULL), KYSO_OK);
    if (strcmp(out, cases[i].want) != 0)
      fail_msg("label \"%s\": got \"%s\", want \"%s\"", cases[i].label, out, cases[i].want);
  }
  /* A long label of bytes that all need escaping falls back to a hash. */
  char label[KYSO_MAX_LABEL + 1];
  memset(label, '/', KYSO_MAX_LABEL);
  label[KYSO_MAX_LABEL] = '\0';
  assert_int_equal(signer__cert_file_name(label, out, NULL), KYSO_OK);
  assert_int_equal(out[0], '~');
  assert_int_equal(strlen(out), 1 + 64 + 4);
  assert_null(strchr(out, '/'));
  /* Plain labels up to the limit keep their name. */
  memset(label, 'k', KYSO_MAX_LABEL);
  assert_int_equal(signer__cert_file_name(label, out, NULL), KYSO_OK);
  assert_int_equal(strlen(out), KYSO_MAX_LABEL + 4);
  /* Bad labels. */
  assert_int_equal(signer__cert_file_name("", out, NULL), KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer__cert_file_name("new\nline", out, NULL), KYSO_INVALID_ARGUMENT);
  label[KYSO_MAX_LABEL - 1] = 'k';
  char longer[KYSO_MAX_LABEL + 2];
  memset(longer, 'k', sizeof(longer) - 1);
  longer[sizeof(longer) - 1] = '\0';
  assert_int_equal(signer__cert_file_name(longer, out, NULL), KYSO_INVALID_ARGUMENT);
}

static int freed;
static void count_free(void *p) {
  freed++;
  free(p);
}

static void test_map(void **state) {
  signer__map *m = NULL;
  char key[32];
  freed = 0;
  assert_int_equal(signer__map_new(count_free, &m, NULL), KYSO_OK);
  for (int i = 0; i < 5000; i++) {
    snprintf(key, sizeof(key), "user-%d", i);
    int *v = malloc(sizeof(int));
    *v = i;
    assert_int_equal(signer__map_put(m, key, v, NULL), KYSO_OK);
  }
  assert_int_equal(signer__map_count(m), 5000);
  for (int i = 0; i < 5000; i++) {
    snprintf(key, sizeof(key), "user-%d", i);
    int *v = signer__map_get(m, key);
    if (v == NULL || *v != i) fail_msg("key %s: got %d, want %d", key, v ? *v : -1, i);
  }
  assert_null(signer__map_get(m, "user-5000"));
  int *v = malloc(sizeof(int));
  *v = -7;
  assert_int_equal(signer__map_put(m, "user-7", v, NULL), KYSO_OK);
  assert_int_equal(freed, 1); /* the replaced value */
  assert_int_equal(*(int *)signer__map_get(m, "user-7"), -7);
  assert_int_equal(signer__map_count(m), 5000);
  signer__map_free(m);
  assert_int_equal(freed, 5001);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ecdsa_raw_to_der),
      cmocka_unit_test(test_ecdsa_raw_to_der_rejects),
      cmocka_unit_test(test_ecdsa_der_max),
      cmocka_unit_test(test_subject_parse),
      cmocka_unit_test(test_cert_file_name),
      cmocka_unit_test(test_map),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
