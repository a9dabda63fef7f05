/* e2e_deadline: with the Sign handler's test delay (KYSO_TEST_SIGN_DELAY_MS,
 * server/svc_signer.c) a client deadline shorter than the delay ends the call
 * with DEADLINE_EXCEEDED at the client; the server notices afterwards and
 * drops the signature; a call with a long enough deadline still succeeds. */
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
#define DELAY_MS 1500

static e2e *E;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static void start_delayed(void **state) {
  (void)state;
  static const char *const env[] = {"KYSO_TEST_SIGN_DELAY_MS=1500", NULL};
  e2e_start(E, env);
  e2e_provision_key(E, PERSONAL, "late.ec", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  if (!e2e_file_contains(E->stderr_path, "KYSO_TEST_SIGN_DELAY_MS"))
    E2E_FAIL("kysod did not warn that the test delay is active");
}

static void short_deadline(void **state) {
  (void)state;
  static const uint8_t doc[] = "Quyết định số 45/QĐ-UBND";
  char msg[512];
  int64_t t0 = kyso_now_ms();
  int st = e2e_sign(E, E2E_DMS, PERSONAL, "late.ec", 0, doc, sizeof(doc) - 1, "too-late", 300,
                    NULL, msg, sizeof(msg));
  int64_t elapsed = kyso_now_ms() - t0;
  fprintf(stderr, "e2e: 300 ms deadline: %s after %lld ms (%s)\n", e2e_grpc_status_names[st],
          (long long)elapsed, msg);
  E2E_EQ("status of a Sign with a 300 ms deadline (4 = DEADLINE_EXCEEDED)", st, 4);
  /* The client gave up on its own deadline, not when the server finished. */
  if (elapsed >= DELAY_MS)
    E2E_FAIL("DEADLINE_EXCEEDED came after %lld ms, want before the %d ms server delay ended",
             (long long)elapsed, DELAY_MS);
  /* The server finishes the delayed call later: wait for it to say so. */
  if (!e2e_wait_for_text(E->stderr_path, "deadline passed", 30000))
    E2E_FAIL("kysod's stderr: got no \"deadline passed\" line within 30 s, want one");
  fprintf(stderr, "e2e: kysod logged the dropped signature %lld ms after the call started\n",
          (long long)(kyso_now_ms() - t0));
  if (!e2e_file_contains(E->stderr_path, "nothing was kept"))
    E2E_FAIL("kysod's deadline message does not say that nothing was kept");
}

static void long_deadline(void **state) {
  (void)state;
  static const uint8_t doc[] = "Báo cáo số 07/BC-STTTT";
  Kyso__V1__SignResponse *resp = NULL;
  char msg[512];
  int64_t t0 = kyso_now_ms();
  int st = e2e_sign(E, E2E_DMS, PERSONAL, "late.ec", 0, doc, sizeof(doc) - 1, "in-time", 10000,
                    &resp, msg, sizeof(msg));
  int64_t elapsed = kyso_now_ms() - t0;
  if (st != 0) E2E_FAIL("Sign with a 10 s deadline: got status %d (%s), want OK", st, msg);
  if (elapsed < DELAY_MS)
    E2E_FAIL("Sign took %lld ms, want at least the %d ms test delay", (long long)elapsed,
             DELAY_MS);
  E2E_STREQ("request_id", resp->request_id, "in-time");
  e2e_write_file(e2e_path(E, "work/in-time.doc"), doc, sizeof(doc) - 1);
  e2e_write_file(e2e_path(E, "work/in-time.p7s"), resp->signature.data, resp->signature.len);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  E2E_EQ("openssl cms -verify exit",
         e2e_openssl_verify(E, e2e_path(E, "work/in-time.doc"), e2e_path(E, "work/in-time.p7s")),
         0);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_delayed),
      cmocka_unit_test(short_deadline),
      cmocka_unit_test(long_deadline),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_deadline", tests, setup, teardown);
}
