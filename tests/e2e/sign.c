/* e2e_sign: personal RSA and EC keys and a unit seal, provisioned over the
 * API, sign sample documents; every signature verifies with
 * `openssl cms -verify -cades`, a flipped byte does not; then 1,000 ECDSA
 * signatures over distinct documents, all verified with openssl. */
#include <dirent.h>
#include <openssl/obj_mac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"
#include "kyso/v1/keys.pb-c.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define SEAL KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL
#define ECDSA_COUNT 1000

static e2e *E;

/* One way of signing: which key, which RSA scheme, what the CMS must say. */
static const struct combo {
  const char *name;
  Kyso__V1__KeyRole role;
  const char *key; /* account, or unit for the seal */
  int rsa_scheme;
  const char *want_label;
  int want_nid; /* signature algorithm in the SignerInfo */
} combos[] = {
    {"rsa-pkcs1", PERSONAL, "e2e.rsa", KYSO__V1__RSA_SCHEME__RSA_SCHEME_PKCS1_V15,
     "kyso/personal/e2e.rsa", NID_rsaEncryption},
    {"rsa-pss", PERSONAL, "e2e.rsa", KYSO__V1__RSA_SCHEME__RSA_SCHEME_PSS,
     "kyso/personal/e2e.rsa", NID_rsassaPss},
    {"seal", SEAL, "H37.DN.001", KYSO__V1__RSA_SCHEME__RSA_SCHEME_UNSPECIFIED,
     "kyso/seal/H37.DN.001", NID_rsaEncryption},
    {"ec", PERSONAL, "e2e.ec", KYSO__V1__RSA_SCHEME__RSA_SCHEME_UNSPECIFIED,
     "kyso/personal/e2e.ec", NID_ecdsa_with_SHA256},
};

/* label -> SubjectPublicKeyInfo, from Keys.List */
static struct { char label[160]; uint8_t *spki; size_t len; } listed[8];
static size_t n_listed;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  int64_t t0 = kyso_now_ms();
  e2e_provision_key(E, PERSONAL, "e2e.rsa", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048);
  e2e_provision_key(E, PERSONAL, "e2e.ec", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  e2e_provision_key(E, SEAL, "H37.DN.001", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048);
  fprintf(stderr, "e2e: provisioned 3 keys in %lld ms\n", (long long)(kyso_now_ms() - t0));
}

/* Keys.List as the archivist: every key listed once, sorted, protected. */
static void list_keys(void **state) {
  (void)state;
  Kyso__V1__ListKeysRequest req = KYSO__V1__LIST_KEYS_REQUEST__INIT;
  Kyso__V1__ListKeysResponse *resp = NULL;
  char msg[512];
  int st = e2e_call(E, E2E_ARCH, "/kyso.v1.Keys/List", &req.base,
                    &kyso__v1__list_keys_response__descriptor, 10000, (ProtobufCMessage **)&resp,
                    msg, sizeof(msg));
  E2E_EQ("Keys.List status", st, 0);
  /* Three signing keys and the TSA key the harness provisions. */
  E2E_EQ("Keys.List count", resp->n_keys, 4);
  for (size_t i = 0; i < resp->n_keys; i++) {
    const Kyso__V1__KeyInfo *k = resp->keys[i];
    if (i > 0 && strcmp(resp->keys[i - 1]->label, k->label) >= 0)
      E2E_FAIL("Keys.List not sorted: \"%s\" before \"%s\"", resp->keys[i - 1]->label, k->label);
    if (!k->has_certificate || !k->sensitive || !k->wrap_with_trusted)
      E2E_FAIL("%s: got has_certificate=%d sensitive=%d wrap_with_trusted=%d, want 1/1/1",
               k->label, k->has_certificate, k->sensitive, k->wrap_with_trusted);
    snprintf(listed[n_listed].label, sizeof(listed[0].label), "%s", k->label);
    listed[n_listed].spki = malloc(k->public_key.len);
    memcpy(listed[n_listed].spki, k->public_key.data, k->public_key.len);
    listed[n_listed++].len = k->public_key.len;
  }
  E2E_STREQ("third label in sort order", resp->keys[2]->label, "kyso/seal/H37.DN.001");
  E2E_STREQ("fourth label in sort order", resp->keys[3]->label, "kyso/tsa/default");
  E2E_STREQ("next_page_token of the only page", resp->next_page_token, "");
  kyso__v1__list_keys_response__free_unpacked(resp, NULL);

  /* The same four, one page at a time. */
  char token[160] = "";
  for (size_t page = 0;; page++) {
    req.page_size = 1;
    req.page_token = token;
    st = e2e_call(E, E2E_ARCH, "/kyso.v1.Keys/List", &req.base,
                  &kyso__v1__list_keys_response__descriptor, 10000, (ProtobufCMessage **)&resp,
                  msg, sizeof(msg));
    E2E_EQ("Keys.List (page_size 1) status", st, 0);
    if (page == n_listed) {
      E2E_EQ("keys on the page after the last", resp->n_keys, 0);
      kyso__v1__list_keys_response__free_unpacked(resp, NULL);
      break;
    }
    E2E_EQ("keys on a page of size 1", resp->n_keys, 1);
    E2E_STREQ("label on this page", resp->keys[0]->label, listed[page].label);
    snprintf(token, sizeof(token), "%s", resp->next_page_token);
    kyso__v1__list_keys_response__free_unpacked(resp, NULL);
    if (token[0] == '\0') {
      E2E_EQ("pages", page + 1, n_listed);
      break;
    }
  }
}

/* Checks a SignResponse against what the test knows. */
static void check_response(const struct combo *c, const Kyso__V1__SignResponse *r,
                           const uint8_t *doc, size_t len, const char *request_id) {
  char want_sha[65];
  e2e_sha256_hex(doc, len, want_sha);
  E2E_STREQ("document_sha256", r->document_sha256, want_sha);
  E2E_STREQ("key_label", r->key_label, c->want_label);
  E2E_STREQ("request_id", r->request_id, request_id);
  int y, mo, d, h, mi, s;
  char z;
  if (strlen(r->signing_time) != 20 ||
      sscanf(r->signing_time, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &z) != 7 ||
      z != 'Z')
    E2E_FAIL("signing_time: got \"%s\", want RFC 3339 UTC", r->signing_time);
  size_t spki_len = 0;
  uint8_t *spki = e2e_cert_spki(r->certificate.data, r->certificate.len, &spki_len);
  if (spki == NULL) E2E_FAIL("certificate (%zu bytes) is not DER X.509", r->certificate.len);
  size_t i;
  for (i = 0; i < n_listed; i++)
    if (strcmp(listed[i].label, c->want_label) == 0) break;
  if (i == n_listed) E2E_FAIL("%s not in Keys.List", c->want_label);
  int same = spki_len == listed[i].len && memcmp(spki, listed[i].spki, spki_len) == 0;
  free(spki);
  if (!same) E2E_FAIL("%s: certificate's public key differs from Keys.List's", c->want_label);
  e2e_cms_info info;
  e2e_cms_inspect(r->signature.data, r->signature.len, &info);
  if (info.sig_nid != c->want_nid &&
      !(c->want_nid == NID_rsaEncryption && info.sig_nid == NID_sha256WithRSAEncryption))
    E2E_FAIL("%s: got signature algorithm %s, want %s", c->name, OBJ_nid2sn(info.sig_nid),
             OBJ_nid2sn(c->want_nid));
}

static void sign_samples(void **state) {
  (void)state;
  const char *names[32];
  uint8_t *docs[32];
  size_t lens[32], n = 0;
  /* Generated: every byte value, a single byte, CRLF text that -binary must keep. */
  static uint8_t all[256 * 3 + 17], one[1] = {0x00};
  static const char crlf[] = "Dòng 1\r\nDòng 2\n\r\n";
  for (size_t i = 0; i < sizeof(all); i++) all[i] = (uint8_t)(i * 7 + i / 256);
  names[n] = "all-bytes.bin", docs[n] = all, lens[n++] = sizeof(all);
  names[n] = "one-byte.bin", docs[n] = one, lens[n++] = 1;
  names[n] = "crlf.txt", docs[n] = (uint8_t *)crlf, lens[n++] = sizeof(crlf) - 1;
  size_t generated = n;
  DIR *dir = opendir(e2e_samples_dir());
  struct dirent *de;
  while (dir && (de = readdir(dir)) != NULL && n < 32) {
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", e2e_samples_dir(), de->d_name);
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
    names[n] = strdup(de->d_name);
    docs[n] = e2e_read_file(path, &lens[n]);
    n++;
  }
  if (dir) closedir(dir);
  if (n == generated) E2E_FAIL("no sample documents in %s", e2e_samples_dir());

  int verified = 0;
  int64_t t0 = kyso_now_ms();
  for (size_t c = 0; c < sizeof(combos) / sizeof(combos[0]); c++) {
    for (size_t d = 0; d < n; d++) {
      Kyso__V1__SignResponse *resp = NULL;
      char msg[512], rid[128];
      snprintf(rid, sizeof(rid), "e2e-%s-%s", combos[c].name, names[d]);
      int st = e2e_sign(E, E2E_DMS, combos[c].role, combos[c].key, combos[c].rsa_scheme, docs[d],
                        lens[d], rid, 30000, &resp, msg, sizeof(msg));
      if (st != 0) E2E_FAIL("Sign %s: got status %d (%s), want OK", rid, st, msg);
      check_response(&combos[c], resp, docs[d], lens[d], rid);
      const char *doc_path = e2e_path(E, "work/%s.%s", combos[c].name, names[d]);
      const char *sig_path = e2e_path(E, "work/%s.%s.p7s", combos[c].name, names[d]);
      e2e_write_file(doc_path, docs[d], lens[d]);
      e2e_write_file(sig_path, resp->signature.data, resp->signature.len);
      kyso__v1__sign_response__free_unpacked(resp, NULL);
      int rc = e2e_openssl_verify(E, doc_path, sig_path);
      if (rc != 0) {
        e2e_sh(NULL, "cat '%s' >&2", e2e_path(E, "work/openssl-verify.log"));
        E2E_FAIL("openssl cms -verify %s: got exit %d, want 0", rid, rc);
      }
      /* Negative control: one flipped byte must not verify. */
      uint8_t *bad = malloc(lens[d]);
      memcpy(bad, docs[d], lens[d]);
      bad[lens[d] / 2] ^= 0x01;
      e2e_write_file(doc_path, bad, lens[d]);
      free(bad);
      rc = e2e_openssl_verify(E, doc_path, sig_path);
      if (rc == 0) E2E_FAIL("openssl cms -verify of tampered %s: got exit 0, want failure", rid);
      verified++;
    }
  }
  fprintf(stderr, "e2e: %d signatures over %zu documents verified (and their tampered copies "
                  "rejected) in %lld ms\n", verified, n, (long long)(kyso_now_ms() - t0));
  for (size_t d = generated; d < n; d++) {
    free((char *)names[d]);
    free(docs[d]);
  }
}

/* 1,000 ECDSA signatures over distinct documents of varied length. If none
 * of them happens to have a short r or s (p ~ 1/2,500), sign more until one
 * does, so the DER encoding of that case is always exercised. */
static void sign_many_ecdsa(void **state) {
  (void)state;
  const Kyso__V1__SignResponse *r;
  int count = 0, short_rs = 0, high_bit = 0;
  int64_t t0 = kyso_now_ms();
  const char *dir = strdup(e2e_path(E, "work/ecdsa"));
  if (mkdir(dir, 0700) != 0) E2E_FAIL("mkdir %s", dir);
  uint8_t *doc = malloc(8192);
  while (count < ECDSA_COUNT || (short_rs == 0 && count < 4 * ECDSA_COUNT)) {
    size_t len = 1 + ((size_t)count * 7919u) % 5000u;
    if (RAND_bytes(doc, (int)len) != 1) E2E_FAIL("RAND_bytes");
    /* Lengths below 4 occur once each; longer documents start with their index. */
    if (len >= sizeof(count)) memcpy(doc, &count, sizeof(count));
    Kyso__V1__SignResponse *resp = NULL;
    char msg[512], want_sha[65];
    int st = e2e_sign(E, E2E_DMS, PERSONAL, "e2e.ec", 0, doc, len, NULL, 30000, &resp, msg,
                      sizeof(msg));
    if (st != 0) E2E_FAIL("ECDSA sign #%d: got status %d (%s), want OK", count, st, msg);
    r = resp;
    e2e_sha256_hex(doc, len, want_sha);
    E2E_STREQ("document_sha256", r->document_sha256, want_sha);
    e2e_cms_info info;
    e2e_cms_inspect(r->signature.data, r->signature.len, &info);
    if (!info.ec_der_canonical || info.ec_r_len == 0)
      E2E_FAIL("ECDSA sign #%d: signature value is not canonical DER (r %d, s %d bytes)", count,
               info.ec_r_len, info.ec_s_len);
    short_rs += info.ec_r_len < 32 || info.ec_s_len < 32;
    high_bit += info.ec_high_bit;
    char path[600];
    snprintf(path, sizeof(path), "%s/%d.doc", dir, count);
    e2e_write_file(path, doc, len);
    snprintf(path, sizeof(path), "%s/%d.doc.p7s", dir, count);
    e2e_write_file(path, r->signature.data, r->signature.len);
    kyso__v1__sign_response__free_unpacked(resp, NULL);
    count++;
  }
  free(doc);
  int64_t t1 = kyso_now_ms();
  long jobs = sysconf(_SC_NPROCESSORS_ONLN);
  int rc = e2e_openssl_verify_many(E, dir, count, jobs > 0 ? (int)jobs : 2);
  int64_t t2 = kyso_now_ms();
  fprintf(stderr, "e2e: %d ECDSA signatures in %lld ms (%d with a short r or s, %d needing a "
                  "DER 0x00 pad); openssl verified them in %lld ms\n", count,
          (long long)(t1 - t0), short_rs, high_bit, (long long)(t2 - t1));
  free((char *)dir);
  E2E_EQ("openssl verification of every ECDSA signature (0 = all verified)", rc, 0);
  if (short_rs == 0) E2E_FAIL("no signature with a short r or s in %d signatures", count);
  if (high_bit == 0) E2E_FAIL("no signature with a high-bit r or s in %d signatures", count);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < n_listed; i++) free(listed[i].spki);
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(list_keys),
      cmocka_unit_test(sign_samples),
      cmocka_unit_test(sign_many_ecdsa),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_sign", tests, setup, teardown);
}
