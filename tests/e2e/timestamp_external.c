/* e2e_timestamp_external: a node whose CAdES-T time-stamps come from an
 * external RFC 3161 TSA over HTTP ([signer] timestamp = external). The
 * external TSA is a second kysod with its own PKI and its HTTP endpoint on.
 * Signing on the first node gives a token from the second, which `openssl
 * ts -verify -token_in` accepts against the second PKI's root; with the
 * external TSA down, Sign fails UNAVAILABLE within the configured timeout,
 * naming the URL, and CAdES-BES still works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define ACCOUNT "ext.official"
#define TIMEOUT_MS 2000

static e2e *node, *remote;
static char url[128];

static int setup(void **state) {
  (void)state;
  remote = e2e_new();
  assert_non_null(remote);
  node = e2e_new();
  assert_non_null(node);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_free(node);
  e2e_free(remote);
  return 0;
}

static void start_both(void **state) {
  (void)state;
  char conf[1024];
  snprintf(remote->tsa_name, sizeof(remote->tsa_name), "remote");
  e2e_config_append(remote, "\n[tsa]\nname = remote\nhttp_listen = 127.0.0.1:0\n");
  e2e_start(remote, NULL);
  if (remote->tsa_http_port <= 0) E2E_FAIL("the remote TSA has no HTTP port");
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/tsa", remote->tsa_http_port);

  /* The node has no TSA key of its own: it does not need one. */
  node->no_auto_tsa = 1;
  snprintf(conf, sizeof(conf),
           "\n[signer]\ntimestamp = external\ntimestamp_url = %s\ntimestamp_ca = %s/root.pem\n"
           "timestamp_timeout_ms = %d\n",
           url, remote->pki, TIMEOUT_MS);
  e2e_config_append(node, conf);
  e2e_start(node, NULL);
  e2e_provision_key(node, PERSONAL, ACCOUNT, EC);
  E2E_EQ("node's Signer health", e2e_health(node, "kyso.v1.Signer"), 1);
}

static void signature_carries_the_remote_token(void **state) {
  (void)state;
  static const uint8_t doc[] = "Tờ trình số 5/TTr: dấu thời gian từ TSA bên ngoài.";
  Kyso__V1__SignResponse *resp = NULL;
  char msg[512];
  const char *tok = e2e_path(node, "work/ext.tst"), *val = e2e_path(node, "work/ext.sigvalue");
  const char *sig = e2e_path(node, "work/ext.p7s"), *d = e2e_path(node, "work/ext.doc");
  int st = e2e_sign(node, E2E_DMS, PERSONAL, ACCOUNT, 0, doc, sizeof(doc) - 1, NULL, 30000,
                    &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign via the external TSA: got status %d (%s), want OK", st, msg);
  if (!strstr(resp->timestamp_tsa, "remote"))
    E2E_FAIL("the token's TSA is '%s', want the remote one", resp->timestamp_tsa);
  E2E_EQ("token present",
         e2e_cms_timestamp(resp->signature.data, resp->signature.len, tok, val), 1);
  if (e2e_openssl_ts_verify(node, remote->pki, tok, val, 1) != 0) {
    e2e_sh(NULL, "cat '%s' >&2", e2e_path(node, "work/ts-verify.log"));
    E2E_FAIL("openssl ts -verify -token_in rejected the remote token");
  }
  /* The node's own PKI did not issue the remote TSA: that must not verify. */
  if (e2e_openssl_ts_verify(node, NULL, tok, val, 1) == 0)
    E2E_FAIL("the remote token verified against the node's own root");
  e2e_write_file(sig, resp->signature.data, resp->signature.len);
  e2e_write_file(d, doc, sizeof(doc) - 1);
  if (e2e_openssl_verify(node, d, sig) != 0) E2E_FAIL("openssl cms -verify rejected it");
  kyso__v1__sign_response__free_unpacked(resp, NULL);
}

static void external_tsa_down(void **state) {
  (void)state;
  static const uint8_t doc[] = "Signed while the external TSA is down.";
  char msg[512];
  e2e_stop(remote);
  int64_t t0 = kyso_now_ms();
  int st = e2e_sign(node, E2E_DMS, PERSONAL, ACCOUNT, 0, doc, sizeof(doc) - 1, NULL, 30000, NULL,
                    msg, sizeof(msg));
  int64_t ms = kyso_now_ms() - t0;
  E2E_EQ("Sign with the external TSA down: status (UNAVAILABLE)", st, 14);
  if (!strstr(msg, url)) E2E_FAIL("the message does not name %s: %s", url, msg);
  if (ms > TIMEOUT_MS + 5000) E2E_FAIL("it took %lld ms, over the %d ms timeout", (long long)ms,
                                       TIMEOUT_MS);
  fprintf(stderr, "e2e: external TSA down -> %lld ms: %s\n", (long long)ms, msg);

  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  req.key = &ref;
  req.document.data = (uint8_t *)doc;
  req.document.len = sizeof(doc) - 1;
  req.format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES;
  st = e2e_sign_with(node->clients[E2E_DMS], &req, 30000, NULL, msg, sizeof(msg));
  E2E_EQ("CAdES-BES with the external TSA down", st, 0);
}

static void stop_clean(void **state) {
  (void)state;
  /* The failed time-stamp was logged as a warning, not an error. */
  e2e_stop(node);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_both),
      cmocka_unit_test(signature_carries_the_remote_token),
      cmocka_unit_test(external_tsa_down),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_timestamp_external", tests, setup, teardown);
}
