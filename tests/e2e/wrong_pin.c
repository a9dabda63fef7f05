/* e2e_wrong_pin: kysod with a wrong HSM PIN exits 2 at once, says why and
 * that it will not retry, and never prints a PIN; with the right PIN the
 * same token opens and serves (one failed login did not lock it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define PROMPT_MS 15000 /* generous for ASan builds; a retry loop would take far longer */

static e2e *E;
static char wrong[40];

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  snprintf(wrong, sizeof(wrong), "%s", E->pin);
  wrong[0] = wrong[0] == '0' ? '1' : '0'; /* same length, one digit off */
  return 0;
}

/* Starts kysod expecting exit status 2 with all of want[] on stderr. */
static void expect_refusal(const char *what, const char *const *want) {
  int ws = 0;
  int64_t t0 = kyso_now_ms();
  if (e2e_start_expect_exit(E, NULL, &ws) != 0)
    E2E_FAIL("%s: kysod got ready, want it to refuse to start", what);
  int64_t elapsed = kyso_now_ms() - t0;
  fprintf(stderr, "e2e: %s: kysod exited (wait status 0x%x) after %lld ms\n", what, ws,
          (long long)elapsed);
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 2)
    E2E_FAIL("%s: got wait status 0x%x, want exit status 2", what, ws);
  if (elapsed > PROMPT_MS)
    E2E_FAIL("%s: kysod took %lld ms to give up, want under %d", what, (long long)elapsed,
             PROMPT_MS);
  for (size_t i = 0; want[i]; i++)
    if (!e2e_file_contains(E->stderr_path, want[i]))
      E2E_FAIL("%s: kysod's stderr lacks \"%s\"", what, want[i]);
  if (e2e_file_contains(E->stderr_path, wrong) || e2e_file_contains(E->stderr_path, E->pin))
    E2E_FAIL("%s: kysod's stderr contains a PIN", what);
}

static void wrong_pin_refused(void **state) {
  (void)state;
  static const char *const want[] = {"PIN", "not retrying", NULL};
  e2e_write_pin(E, wrong);
  expect_refusal("wrong PIN", want);
  expect_refusal("wrong PIN, second start", want);
}

static void pin_file_readable_by_others(void **state) {
  (void)state;
  static const char *const want[] = {"chmod 600", NULL};
  e2e_write_pin(E, E->pin);
  if (chmod(E->pin_file, 0644) != 0) E2E_FAIL("chmod");
  expect_refusal("PIN file mode 0644", want);
}

static void right_pin_serves(void **state) {
  (void)state;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *h = NULL;
  Kyso__V1__SignResponse *resp = NULL;
  static const uint8_t doc[] = "Công văn số 123/UBND-VP";
  char msg[512];
  e2e_write_pin(E, E->pin);
  e2e_start(E, NULL);
  int st = e2e_call(E, E2E_ANON, "/grpc.health.v1.Health/Check", &hreq.base,
                    &grpc__health__v1__health_check_response__descriptor, 10000,
                    (ProtobufCMessage **)&h, msg, sizeof(msg));
  E2E_EQ("Health/Check status", st, 0);
  E2E_EQ("serving status", h->status,
         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  grpc__health__v1__health_check_response__free_unpacked(h, NULL);
  /* The token works: a key made and used after the failed logins. */
  e2e_provision_key(E, PERSONAL, "pin.ec", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  st = e2e_sign(E, E2E_DMS, PERSONAL, "pin.ec", 0, doc, sizeof(doc) - 1, NULL, 10000, &resp, msg,
                sizeof(msg));
  if (st != 0) E2E_FAIL("Sign: got status %d (%s), want OK", st, msg);
  e2e_write_file(e2e_path(E, "work/pin.doc"), doc, sizeof(doc) - 1);
  e2e_write_file(e2e_path(E, "work/pin.p7s"), resp->signature.data, resp->signature.len);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  E2E_EQ("openssl cms -verify exit",
         e2e_openssl_verify(E, e2e_path(E, "work/pin.doc"), e2e_path(E, "work/pin.p7s")), 0);
  if (e2e_file_contains(E->stderr_path, E->pin)) E2E_FAIL("kysod's stderr contains the PIN");
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(wrong_pin_refused),
      cmocka_unit_test(pin_file_readable_by_others),
      cmocka_unit_test(right_pin_serves),
  };
  return cmocka_run_group_tests_name("e2e_wrong_pin", tests, setup, teardown);
}
