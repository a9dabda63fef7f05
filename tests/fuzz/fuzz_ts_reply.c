/* Fuzz target: what a TSA sends back and what CAdES-T signatures carry.
 * The input is read as a TimeStampResp and as a bare token
 * (signer_ts_describe), accepted as the answer to a fixed query
 * (signer_ts_accept); the token (the accepted one, else the input) is added
 * to a fixed signature (signer_cms_add_timestamp) and that verified
 * (signer_verify_cms_full); and the input is taken as a CMS signature
 * itself, to read, time-stamp and verify. Verification uses an empty trust
 * store, so nothing may ever verify. The fixed signature and token are
 * data/ (make_ts_seeds.sh writes them and the seeds; the seeds' replies
 * answer a query for the SHA-256 of the signature's value with FUZZ_NONCE). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "kyso/signer.h"

#ifndef KYSO_FUZZ_DATA
#error "KYSO_FUZZ_DATA must name tests/fuzz/data"
#endif

#define FUZZ_NONCE UINT64_C(0x4B59534F46555A5A) /* as make_ts_seeds.sh */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char doc[] = "kyso fuzz: the signed document\n";

static struct {
  uint8_t *cms, *token, *value;
  size_t cms_len, token_len, value_len;
  uint8_t digest[32]; /* SHA-256 of the signature value */
  X509_STORE *empty;
} fx;

static uint8_t *read_all(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", KYSO_FUZZ_DATA, name);
  FILE *f = fopen(path, "rb");
  uint8_t *buf = malloc(1 << 16);
  *len = f != NULL && buf != NULL ? fread(buf, 1, 1 << 16, f) : 0;
  if (f != NULL) fclose(f);
  if (*len == 0) {
    fprintf(stderr, "fuzz_ts_reply: cannot read %s\n", path);
    abort();
  }
  return buf;
}

static void teardown(void) {
  free(fx.cms);
  free(fx.token);
  free(fx.value);
  X509_STORE_free(fx.empty);
}

static void setup(void) {
  kyso_err err = {0};
  unsigned n = 0;
  fx.cms = read_all("signature.p7s", &fx.cms_len);
  fx.token = read_all("token.tst", &fx.token_len);
  if (signer_cms_signature_value(fx.cms, fx.cms_len, &fx.value, &fx.value_len, &err) != KYSO_OK ||
      !EVP_Digest(fx.value, fx.value_len, fx.digest, &n, EVP_sha256(), NULL) ||
      (fx.empty = X509_STORE_new()) == NULL) {
    fprintf(stderr, "fuzz_ts_reply: setup: %s\n", err.msg);
    abort();
  }
  atexit(teardown);
}

/* Every string of the info is terminated; status_text, which comes from
 * the TSA and ends up in logs, has no control characters. */
static void check_info(const signer_ts_info *i) {
  const char *fields[] = {i->status_text, i->serial, i->gen_time_text, i->policy, i->hash, i->tsa};
  const size_t sizes[] = {sizeof(i->status_text), sizeof(i->serial), sizeof(i->gen_time_text),
                          sizeof(i->policy),      sizeof(i->hash),   sizeof(i->tsa)};
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
    if (memchr(fields[k], '\0', sizes[k]) == NULL) __builtin_trap();
  for (const char *p = i->status_text; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) __builtin_trap();
  for (const char *p = i->serial; *p; p++)
    if (*p < '0' || *p > '9') __builtin_trap();
}

static int same_value(const uint8_t *cms, size_t len, const uint8_t *want, size_t want_len) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  if (signer_cms_signature_value(cms, len, &v, &n, &err) != KYSO_OK) return 0;
  int same = n == want_len && memcmp(v, want, n) == 0;
  free(v);
  return same;
}

/* cms with token added must keep its signature value, refuse a second
 * token, and not verify against an empty store. */
static void add_and_verify(const uint8_t *cms, size_t cms_len, const uint8_t *token,
                           size_t token_len) {
  uint8_t *out = NULL, *again = NULL, *value = NULL;
  size_t out_len = 0, again_len = 0, value_len = 0;
  kyso_err err = {0};
  if (signer_cms_add_timestamp(cms, cms_len, token, token_len, &out, &out_len, &err) != KYSO_OK) {
    if (out != NULL || out_len != 0) __builtin_trap();
    return;
  }
  signer_ts_info info;
  if (signer_ts_describe(token, token_len, 1, &info, &err) != KYSO_OK) __builtin_trap();
  if (signer_cms_signature_value(cms, cms_len, &value, &value_len, &err) != KYSO_OK ||
      !same_value(out, out_len, value, value_len))
    __builtin_trap();
  if (signer_cms_add_timestamp(out, out_len, token, token_len, &again, &again_len, &err) !=
      KYSO_FAILED_PRECONDITION)
    __builtin_trap();
  signer_verified v;
  kyso_status st = signer_verify_cms_full(fx.empty, out, out_len, (const uint8_t *)doc,
                                          sizeof(doc) - 1, SIGNER_VERIFY_REQUIRE_TIMESTAMP, &v,
                                          &err);
  if (st == KYSO_OK || v.signer != NULL) __builtin_trap();
  OPENSSL_free(again);
  free(value);
  OPENSSL_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    setup();
    ready = 1;
  }
  kyso_err err = {0};
  signer_ts_info reply, token;

  /* As a reply: a token exactly when the status is granted(WithMods). */
  int reply_ok = signer_ts_describe(data, size, 0, &reply, &err) == KYSO_OK;
  check_info(&reply);
  if (reply_ok && reply.has_token != (reply.status == 0 || reply.status == 1)) __builtin_trap();
  if (!reply_ok && reply.status != -1) __builtin_trap();
  /* As a bare token: granted by definition. */
  if (signer_ts_describe(data, size, 1, &token, &err) == KYSO_OK) {
    if (token.status != 0 || !token.has_token) __builtin_trap();
  } else if (token.status != -1) {
    __builtin_trap();
  }
  check_info(&token);

  /* Accepted only as a granted reply; the token it returns reads back. */
  uint8_t *tok = NULL;
  size_t tok_len = 0;
  if (signer_ts_accept(data, size, fx.digest, FUZZ_NONCE, NULL, &tok, &tok_len, &err) == KYSO_OK) {
    signer_ts_info got;
    if (!reply_ok || !reply.has_token || tok == NULL ||
        signer_ts_describe(tok, tok_len, 1, &got, &err) != KYSO_OK || got.status != 0 ||
        strcmp(got.serial, reply.serial) != 0)
      __builtin_trap();
  } else if (tok != NULL || tok_len != 0) {
    __builtin_trap();
  }

  /* The accepted token, else the input, on the fixed signature. */
  add_and_verify(fx.cms, fx.cms_len, tok != NULL ? tok : data, tok != NULL ? tok_len : size);
  OPENSSL_free(tok);

  /* The input as a signature: its value, the fixed token on it, and a
   * verification that cannot succeed. */
  uint8_t *value = NULL;
  size_t value_len = 0;
  if (signer_cms_signature_value(data, size, &value, &value_len, &err) == KYSO_OK) {
    if (value == NULL || value_len == 0) __builtin_trap();
    free(value);
    add_and_verify(data, size, fx.token, fx.token_len);
  } else if (value != NULL || value_len != 0) {
    __builtin_trap();
  }
  signer_verified v;
  if (signer_verify_cms_full(fx.empty, data, size, (const uint8_t *)doc, sizeof(doc) - 1, 0, &v,
                             &err) == KYSO_OK ||
      v.signer != NULL)
    __builtin_trap();
  return 0;
}
