/* kyso tests — the rpc layer over TLS with a throw-away PKI: client
 * certificates are requested but judged by the auth hook, not by TLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/status.h>

#include "harness.h"
#include "kyso/util.h"
#include "rpc_internal.h"

static char pki[512];   /* root, sub-CA, server and client certificates */
static char other[512]; /* an unrelated PKI, for a certificate nobody trusts */
static harness hx;

#define PATH(buf, dir, name) snprintf(buf, sizeof(buf), "%s/%s", dir, name)

static unsigned cache_seconds; /* the group's rpc_server_opts.peer_cache_seconds */

static int group_setup(void **state) {
  char chain[600], srv[600], sub[600], key[600], root[600];
  h_init();
  if (h_pki_make(pki, sizeof(pki)) != 0 || h_pki_make(other, sizeof(other)) != 0) return -1;
  PATH(srv, pki, "server.pem");
  PATH(sub, pki, "chain.pem");
  PATH(chain, pki, "server-chain.pem");
  PATH(key, pki, "server.key");
  PATH(root, pki, "root.pem");
  if (h_concat(srv, sub, chain) != 0) return -1;
  rpc_server_opts o = {.tls_cert_file = chain, .tls_key_file = key, .client_ca_file = root,
                       .peer_cache_seconds = cache_seconds};
  return h_start(&hx, &o, 1);
}

static int group_teardown(void **state) {
  h_stop(&hx, 1000);
  h_pki_remove(pki);
  h_pki_remove(other);
  return 0;
}

static kyso_client *tls_client(const char *dir, const char *name) {
  char ca[600], cert[600], key[600];
  PATH(ca, pki, "root.pem");
  if (name == NULL) return h_client(&hx, ca, NULL, NULL, 0);
  snprintf(cert, sizeof(cert), "%s/%s.pem", dir, name);
  snprintf(key, sizeof(key), "%s/%s.key", dir, name);
  return h_client(&hx, ca, cert, key, 0);
}

/* Calls method and checks the status, message and what the hook saw. */
static void expect(kyso_client *c, const char *method, int want_status, const char *want_msg,
                   const char *want_cert_pem) {
  int had_cert;
  uint8_t sha[32];
  char op[64], got_hex[65], want_hex[65];
  kyso_reply r = h_call(c, method, "x", 1, 10000);
  if (r.grpc_status != want_status || (want_msg && strcmp(r.message, want_msg) != 0))
    fail_msg("%s: got %d '%s', want %d '%s'", method, r.grpc_status, r.message, want_status,
             want_msg ? want_msg : "(any)");
  h_hook_snapshot(&had_cert, sha, op, sizeof(op));
  if (want_cert_pem == NULL) {
    if (had_cert) fail_msg("%s: the hook saw a certificate, want none", method);
  } else {
    assert_int_equal(h_openssl_fingerprint(want_cert_pem, want_hex), 0);
    kyso_hex(sha, 32, got_hex);
    if (!had_cert || strcmp(got_hex, want_hex) != 0)
      fail_msg("%s: hook saw cert=%d sha256 %s, want %s", method, had_cert, got_hex, want_hex);
  }
  kyso_reply_free(&r);
}

static void test_client_cert_reaches_hook(void **state) {
  char pem[600];
  PATH(pem, pki, "client.pem");
  kyso_client *c = tls_client(pki, "client");
  assert_non_null(c);
  expect(c, M_ECHO, GRPC_STATUS_OK, NULL, pem);
  kyso_reply r = h_call(c, M_WHOAMI, NULL, 0, 10000);
  assert_int_equal(r.grpc_status, GRPC_STATUS_OK);
  assert_int_equal(r.len, strlen("dms-frontend"));
  assert_memory_equal(r.data, "dms-frontend", r.len);
  kyso_reply_free(&r);
  kyso_client_close(c);
}

/* Several clients in turn, each on its own connection: every call (the first
 * parses, later ones may come from the peer cache) shows the hook the
 * caller's own certificate, never another's. */
static void test_each_caller_keeps_its_identity(void **state) {
  static const struct { int other_pki; const char *name, *cn; } who[] = {
      {0, "client", "dms-frontend"},
      {0, "operator", "operator"},
      {0, "archivist", "archivist"},
      {1, "client", "dms-frontend"},
  };
  enum { N = sizeof(who) / sizeof(who[0]) };
  kyso_client *c[N];
  char pem[N][600];
  for (size_t i = 0; i < N; i++) {
    const char *dir = who[i].other_pki ? other : pki;
    snprintf(pem[i], sizeof(pem[i]), "%s/%s.pem", dir, who[i].name);
    assert_non_null(c[i] = tls_client(dir, who[i].name));
  }
  for (int round = 0; round < 3; round++)
    for (size_t i = 0; i < N; i++) {
      expect(c[i], M_ECHO, GRPC_STATUS_OK, NULL, pem[i]);
      kyso_reply r = h_call(c[i], M_WHOAMI, NULL, 0, 10000);
      if (r.grpc_status != GRPC_STATUS_OK || r.len != strlen(who[i].cn) ||
          memcmp(r.data, who[i].cn, r.len) != 0)
        fail_msg("round %d, %s%s: got %d '%.*s', want OK '%s'", round,
                 who[i].other_pki ? "other PKI's " : "", who[i].name, r.grpc_status,
                 (int)r.len, r.data ? (const char *)r.data : "", who[i].cn);
      kyso_reply_free(&r);
    }
  for (size_t i = 0; i < N; i++) kyso_client_close(c[i]);
  /* One entry per certificate, however many calls it made. */
  if (cache_seconds == 0)
    assert_null(hx.srv->peer_cache);
  else
    assert_int_equal(rpc__peer_cache_count(hx.srv->peer_cache), N);
}

static void test_no_client_cert(void **state) {
  kyso_client *c = tls_client(pki, NULL);
  assert_non_null(c);
  expect(c, M_ECHO, GRPC_STATUS_OK, NULL, NULL);
  /* The hook, not the handshake, refuses: the client learns why. */
  expect(c, M_WHOAMI, GRPC_STATUS_UNAUTHENTICATED, NOCERT_MSG, NULL);
  kyso_client_close(c);
}

static void test_untrusted_cert_left_to_hook(void **state) {
  char pem[600];
  PATH(pem, other, "client.pem");
  kyso_client *c = tls_client(other, "client");
  assert_non_null(c);
  expect(c, M_ECHO, GRPC_STATUS_OK, NULL, pem);
  expect(c, M_DENIED, GRPC_STATUS_PERMISSION_DENIED, DENY_MSG, pem);
  kyso_client_close(c);
}

static void test_plaintext_client_refused(void **state) {
  kyso_client *c = h_client(&hx, NULL, NULL, NULL, 0);
  assert_non_null(c);
  kyso_reply r = h_call(c, M_ECHO, "x", 1, 5000);
  assert_int_not_equal(r.grpc_status, GRPC_STATUS_OK);
  kyso_reply_free(&r);
  kyso_client_close(c);
}

static kyso_status allow_all(void *app, rpc_peer *peer, const char *op, kyso_err *err) {
  return KYSO_OK;
}

static void nop_handler(rpc_call *call, void *app) { rpc_call_finish(call, KYSO_OK, NULL, NULL, 0); }

static void test_tls_start_errors(void **state) {
  char chain[600], key[600], wrong_key[600];
  PATH(chain, pki, "server-chain.pem");
  PATH(key, pki, "server.key");
  PATH(wrong_key, pki, "client.key");
  const rpc_method one[] = {{"/a.B/C", "c", nop_handler, RPC_UNARY}};
  const struct {
    const char *name;
    const char *cert, *key, *ca;
    kyso_status want;
    const char *want_msg;
  } cases[] = {
      {"missing certificate", "/nonexistent/server.pem", key, NULL, KYSO_NOT_FOUND,
       "/nonexistent/server.pem"},
      {"missing key", chain, "/nonexistent/server.key", NULL, KYSO_NOT_FOUND,
       "/nonexistent/server.key"},
      {"certificate without key", chain, NULL, NULL, KYSO_INVALID_ARGUMENT, chain},
      {"key of another certificate", chain, wrong_key, NULL, KYSO_INVALID_ARGUMENT, wrong_key},
      {"key file as certificate", key, key, NULL, KYSO_INVALID_ARGUMENT, "no PEM certificate"},
      {"missing client CA", chain, key, "/nonexistent/ca.pem", KYSO_NOT_FOUND,
       "/nonexistent/ca.pem"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    rpc_server *srv = NULL;
    kyso_err err;
    kyso_err_clear(&err);
    rpc_server_opts o = {.listen_addr = "127.0.0.1:0", .tls_cert_file = cases[i].cert,
                         .tls_key_file = cases[i].key, .client_ca_file = cases[i].ca,
                         .auth = allow_all};
    kyso_status st = rpc_server_start(&o, one, 1, NULL, &srv, &err);
    if (st != cases[i].want || srv != NULL || strstr(err.msg, cases[i].want_msg) == NULL)
      fail_msg("%s: got %s '%s', want %s naming '%s'", cases[i].name, kyso_strerror(st),
               err.msg, kyso_strerror(cases[i].want), cases[i].want_msg);
    rpc_server_shutdown(srv, 0);
  }
}

static void test_client_key_mismatch(void **state) {
  char ca[600], cert[600], key[600];
  PATH(ca, pki, "root.pem");
  PATH(cert, pki, "client.pem");
  PATH(key, pki, "operator.key");
  kyso_client *c = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  kyso_client_opts o = {.target = hx.target, .ca_file = ca, .cert_file = cert, .key_file = key};
  assert_int_equal(kyso_client_open(&o, &c, &err), KYSO_INVALID_ARGUMENT);
  assert_null(c);
  assert_non_null(strstr(err.msg, key));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_cert_reaches_hook),
      cmocka_unit_test(test_each_caller_keeps_its_identity),
      cmocka_unit_test(test_no_client_cert),
      cmocka_unit_test(test_untrusted_cert_left_to_hook),
      cmocka_unit_test(test_plaintext_client_refused),
      cmocka_unit_test(test_tls_start_errors),
      cmocka_unit_test(test_client_key_mismatch),
  };
  /* Once parsing every call, once with the peer cache kysod runs with. */
  int failed = cmocka_run_group_tests_name("tls, peer cache off", tests, group_setup,
                                           group_teardown);
  cache_seconds = 60;
  return failed + cmocka_run_group_tests_name("tls, peer cache 60 s", tests, group_setup,
                                              group_teardown);
}
