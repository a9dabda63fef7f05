/* Unit tests: kysod__authorize with the verification cache — a verified
 * chain is remembered for [tls] peer_cache_seconds and no longer than its
 * earliest notAfter; a failure is never remembered; the caller and role
 * checks run on every call. Certificates are made here; the cache's clocks
 * are moved by the test while OpenSSL verifies against the real time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "kysod.h"
#include "rpc_internal.h"

typedef struct fake_clock {
  int64_t mono_ms;
  time_t wall;
} fake_clock;

static int64_t fake_mono(void *ctx) { return ((fake_clock *)ctx)->mono_ms; }
static time_t fake_wall(void *ctx) { return ((fake_clock *)ctx)->wall; }

typedef struct pki {
  EVP_PKEY *ca_key;
  X509 *ca;
  X509 *leaf;
  uint8_t leaf_sha256[32];
} pki;

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       time_t not_after, int is_ca) {
  X509 *x = X509_new();
  X509V3_CTX v3;
  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), is_ca ? 1 : 2);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  ASN1_TIME_set(X509_getm_notBefore(x), time(NULL) - 3600);
  ASN1_TIME_set(X509_getm_notAfter(x), not_after);
  X509_set_pubkey(x, key);
  X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                            is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  assert_non_null(ext);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

/* A CA valid until ca_until and a client certificate it issued, valid until
 * leaf_until. */
static void pki_make(pki *p, time_t ca_until, time_t leaf_until) {
  unsigned char *der = NULL;
  unsigned len = 0;
  EVP_PKEY *leaf_key = EVP_EC_gen("P-256");
  p->ca_key = EVP_EC_gen("P-256");
  assert_non_null(leaf_key);
  assert_non_null(p->ca_key);
  p->ca = make_cert(p->ca_key, "authz test CA", NULL, NULL, ca_until, 1);
  p->leaf = make_cert(leaf_key, "dms-frontend", p->ca, p->ca_key, leaf_until, 0);
  int n = i2d_X509(p->leaf, &der);
  assert_true(n > 0);
  assert_int_equal(EVP_Digest(der, (size_t)n, p->leaf_sha256, &len, EVP_sha256(), NULL), 1);
  OPENSSL_free(der);
  EVP_PKEY_free(leaf_key);
}

static void pki_free(pki *p) {
  X509_free(p->leaf);
  X509_free(p->ca);
  EVP_PKEY_free(p->ca_key);
}

static X509_STORE *store_with(X509 *ca) {
  X509_STORE *s = X509_STORE_new();
  assert_non_null(s);
  if (ca != NULL) assert_int_equal(X509_STORE_add_cert(s, ca), 1);
  return s;
}

/* A node that knows the leaf as caller 'dms' (service), trusts ca (or
 * nothing) and remembers verifications for ttl seconds (0: off). */
typedef struct node {
  kysod d;
  kyso_caller caller;
  fake_clock clock;
} node;

static void node_make(node *n, const pki *p, X509 *ca, unsigned ttl) {
  kyso_err err;
  kyso_err_clear(&err);
  memset(n, 0, sizeof(*n));
  snprintf(n->caller.name, sizeof(n->caller.name), "dms");
  memcpy(n->caller.cert_sha256, p->leaf_sha256, 32);
  n->caller.roles = KYSO_ROLE_SERVICE;
  n->d.cfg.callers = &n->caller;
  n->d.cfg.caller_count = 1;
  n->d.client_store = store_with(ca);
  assert_int_equal(rpc_peer_cache_new(16, ttl, &n->d.verified, &err), KYSO_OK);
  n->clock.mono_ms = 1000;
  n->clock.wall = time(NULL);
  rpc__clock clk = {fake_mono, fake_wall, &n->clock};
  rpc__peer_cache_set_clock(n->d.verified, &clk);
}

/* Trust changes under the node: what it verifies against from now on. */
static void node_trust(node *n, X509 *ca) {
  X509_STORE_free(n->d.client_store);
  n->d.client_store = store_with(ca);
}

static void node_free(node *n) {
  rpc_peer_cache_free(n->d.verified);
  X509_STORE_free(n->d.client_store);
}

/* One call as leaf; checks the status and that msg (if any) is in the error. */
static void call(node *n, const pki *p, const char *operation, kyso_status want,
                 const char *want_msg, const char *what) {
  rpc_peer peer;
  kyso_err err;
  kyso_err_clear(&err);
  memset(&peer, 0, sizeof(peer));
  peer.cert = p->leaf;
  memcpy(peer.cert_sha256, p->leaf_sha256, 32);
  kyso_status got = kysod__authorize(&n->d, &peer, operation, &err);
  if (got != want || (want_msg != NULL && strstr(err.msg, want_msg) == NULL))
    fail_msg("%s: got %s '%s', want %s '%s'", what, kyso_strerror(got), err.msg,
             kyso_strerror(want), want_msg ? want_msg : "");
  if (got == KYSO_OK && strcmp(peer.principal, "dms") != 0)
    fail_msg("%s: principal '%s', want 'dms'", what, peer.principal);
}

static void test_success_is_remembered_for_the_ttl(void **state) {
  pki p;
  node n;
  time_t now = time(NULL);
  pki_make(&p, now + 365 * 86400, now + 30 * 86400);
  node_make(&n, &p, p.ca, 60);
  call(&n, &p, "sign", KYSO_OK, NULL, "first call verifies");
  node_trust(&n, NULL);
  call(&n, &p, "sign", KYSO_OK, NULL, "within the ttl: remembered");
  n.clock.mono_ms += 59 * 1000;
  call(&n, &p, "sign", KYSO_OK, NULL, "59 s later: remembered");
  n.clock.mono_ms += 1000;
  call(&n, &p, "sign", KYSO_UNAUTHENTICATED, "is not trusted", "60 s later: verified again");
  node_free(&n);
  pki_free(&p);
}

static void test_failure_is_not_remembered(void **state) {
  pki p;
  node n;
  time_t now = time(NULL);
  pki_make(&p, now + 365 * 86400, now + 30 * 86400);
  node_make(&n, &p, NULL, 60);
  call(&n, &p, "sign", KYSO_UNAUTHENTICATED, "is not trusted", "CA not yet trusted");
  call(&n, &p, "sign", KYSO_UNAUTHENTICATED, "is not trusted", "CA not yet trusted, again");
  node_trust(&n, p.ca);
  call(&n, &p, "sign", KYSO_OK, NULL, "CA trusted: the next call passes at once");
  node_free(&n);
  pki_free(&p);
}

/* The earliest notAfter in the chain ends the entry, leaf's or CA's. */
static void test_chain_not_after_ends_the_entry(void **state) {
  const time_t now = time(NULL);
  static const struct {
    const char *name;
    time_t ca_valid, leaf_valid; /* seconds from now */
    time_t wall;                 /* the cache's wall clock, from now */
    kyso_status want;            /* with the CA no longer trusted */
  } cases[] = {
      {"leaf expires first, before it", 7200, 3600, 3599, KYSO_OK},
      {"leaf expires first, at it", 7200, 3600, 3600, KYSO_UNAUTHENTICATED},
      {"CA expires first, before it", 3600, 7200, 3599, KYSO_OK},
      {"CA expires first, at it", 3600, 7200, 3600, KYSO_UNAUTHENTICATED},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    pki p;
    node n;
    pki_make(&p, now + cases[i].ca_valid, now + cases[i].leaf_valid);
    node_make(&n, &p, p.ca, 3600);
    n.clock.wall = now;
    call(&n, &p, "sign", KYSO_OK, NULL, cases[i].name);
    node_trust(&n, NULL);
    n.clock.wall = now + cases[i].wall;
    call(&n, &p, "sign", cases[i].want, NULL, cases[i].name);
    node_free(&n);
    pki_free(&p);
  }
}

static void test_cache_off_verifies_every_call(void **state) {
  pki p;
  node n;
  time_t now = time(NULL);
  pki_make(&p, now + 365 * 86400, now + 30 * 86400);
  node_make(&n, &p, p.ca, 0);
  assert_null(n.d.verified);
  call(&n, &p, "sign", KYSO_OK, NULL, "cache off: verified");
  node_trust(&n, NULL);
  call(&n, &p, "sign", KYSO_UNAUTHENTICATED, "is not trusted", "cache off: verified again");
  node_free(&n);
  pki_free(&p);
}

/* The cache answers "does the chain verify", nothing more: who the caller
 * is and what its roles allow are decided on every call. */
static void test_caller_and_roles_checked_on_every_call(void **state) {
  pki p;
  node n;
  time_t now = time(NULL);
  pki_make(&p, now + 365 * 86400, now + 30 * 86400);
  node_make(&n, &p, p.ca, 60);
  call(&n, &p, "sign", KYSO_OK, NULL, "verified and remembered");
  call(&n, &p, "keys.generate", KYSO_PERMISSION_DENIED, "may not keys.generate",
       "remembered chain, role still checked");
  n.d.cfg.caller_count = 0;
  call(&n, &p, "sign", KYSO_UNAUTHENTICATED, "is not registered",
       "remembered chain, caller removed");
  node_free(&n);
  pki_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_success_is_remembered_for_the_ttl),
      cmocka_unit_test(test_failure_is_not_remembered),
      cmocka_unit_test(test_chain_not_after_ends_the_entry),
      cmocka_unit_test(test_cache_off_verifies_every_call),
      cmocka_unit_test(test_caller_and_roles_checked_on_every_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
