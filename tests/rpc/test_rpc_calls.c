/* kyso tests — the rpc layer over plaintext loopback: round trips, limits,
 * unknown methods, deadlines, the auth hook, a full queue, concurrency, and
 * start-up errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/status.h>

#include "harness.h"
#include "kyso/limits.h"
#include "kyso/util.h"

static harness hx; /* one server for the group */

/* gRPC's deadline arithmetic is coarse (grpc-timeout rounds up, the core
 * caches its clock): the server may see a few ms more than the client asked. */
#define SLACK_MS 100

static int group_setup(void **state) {
  h_init();
  return h_start(&hx, NULL, 0);
}

static int group_teardown(void **state) {
  h_stop(&hx, 1000);
  return 0;
}

static uint8_t *pattern(size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131u + (i >> 13));
  return p;
}

static void test_echo_sizes(void **state) {
  static const struct {
    const char *name;
    size_t len;
  } cases[] = {
      {"empty message", 0},
      {"one byte", 1},
      {"3 MiB (arrives in many slices)", 3u << 20},
      {"64 bytes under the cap", KYSO_MAX_MESSAGE - 64},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t *req = pattern(cases[i].len);
    kyso_reply r = h_call(hx.cli, M_ECHO, req, cases[i].len, 10000);
    if (r.grpc_status != GRPC_STATUS_OK || r.len != cases[i].len ||
        (r.len && memcmp(r.data, req, r.len) != 0))
      fail_msg("%s: got status %d '%s' and %zu bytes, want OK and the same %zu bytes",
               cases[i].name, r.grpc_status, r.message, r.len, cases[i].len);
    kyso_reply_free(&r);
    free(req);
  }
  int had_cert;
  uint8_t sha[32];
  char op[64];
  h_hook_snapshot(&had_cert, sha, op, sizeof(op));
  assert_string_equal(op, "echo");
  assert_false(had_cert);
}

static void test_deadline_seen_by_handler(void **state) {
  kyso_reply r = h_call(hx.cli, M_ECHO, "x", 1, 0);
  assert_int_equal(r.grpc_status, GRPC_STATUS_OK);
  /* No client deadline: the server's cap (max_call_ms, 10 minutes by
   * default) is the deadline the handler sees. */
  int64_t capped = H_I64(echo_remaining_ms);
  if (capped <= 10 * 60 * 1000 - 60 * 1000 || capped > 10 * 60 * 1000)
    fail_msg("remaining_ms without a deadline: got %lld, want just under 600000",
             (long long)capped);
  kyso_reply_free(&r);
  r = h_call(hx.cli, M_ECHO, "x", 1, 5000);
  assert_int_equal(r.grpc_status, GRPC_STATUS_OK);
  int64_t left = H_I64(echo_remaining_ms);
  if (left <= 0 || left > 5000 + SLACK_MS)
    fail_msg("remaining_ms: got %lld, want within (0, %d]", (long long)left, 5000 + SLACK_MS);
  kyso_reply_free(&r);
}

static void test_over_limit(void **state) {
  const size_t len = 5u << 20;
  uint8_t *req = pattern(len);
  kyso_client *big = h_client(&hx, NULL, NULL, NULL, 8u << 20);
  assert_non_null(big);
  static const struct {
    const char *name;
    int big_client;
    const char *want_msg; /* the core's words: which side refused */
  } cases[] = {{"server refuses (client allows 8 MiB)", 1, "Received message larger than max"},
               {"client refuses (4 MiB cap)", 0, "Sent message larger than max"}};
  for (size_t i = 0; i < 2; i++) {
    kyso_reply r = h_call(cases[i].big_client ? big : hx.cli, M_ECHO, req, len, 10000);
    if (r.grpc_status != GRPC_STATUS_RESOURCE_EXHAUSTED ||
        strstr(r.message, cases[i].want_msg) == NULL)
      fail_msg("%s: got status %d '%s', want RESOURCE_EXHAUSTED '%s'", cases[i].name,
               r.grpc_status, r.message, cases[i].want_msg);
    kyso_reply_free(&r);
  }
  /* The server is fine afterwards. */
  kyso_reply r = h_call(big, M_ECHO, "ok", 2, 5000);
  assert_int_equal(r.grpc_status, GRPC_STATUS_OK);
  kyso_reply_free(&r);
  kyso_client_close(big);
  free(req);
}

static void test_unimplemented(void **state) {
  static const char *paths[] = {"/kyso.test.Nope/Missing", "/kyso.test.Echo/Missing",
                                "/kyso.test.Echo/echo"};
  int hooks_before = H_INT(hook_calls);
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    int64_t t0 = kyso_now_ms();
    kyso_reply r = h_call(hx.cli, paths[i], "x", 1, 10000);
    int64_t took = kyso_now_ms() - t0;
    if (r.grpc_status != GRPC_STATUS_UNIMPLEMENTED || strstr(r.message, paths[i]) == NULL ||
        took > 2000)
      fail_msg("%s: got status %d '%s' after %lld ms, want UNIMPLEMENTED naming the method "
               "well before the 10 s deadline", paths[i], r.grpc_status, r.message,
               (long long)took);
    kyso_reply_free(&r);
  }
  assert_int_equal(H_INT(hook_calls), hooks_before);
}

static void test_deadline_in_handler(void **state) {
  kyso_reply r = h_call(hx.cli, M_DEADLINE, "x", 1, 300);
  assert_int_equal(r.grpc_status, GRPC_STATUS_DEADLINE_EXCEEDED);
  kyso_reply_free(&r);
  while (sem_wait(&H.deadline_done) != 0) {
  }
  int64_t first = H_I64(deadline_first_ms), last = H_I64(deadline_last_ms);
  if (first <= 0 || first > 300 + SLACK_MS || last > 0)
    fail_msg("handler saw remaining %lld ms then %lld ms, want (0, %d] then <= 0",
             (long long)first, (long long)last, 300 + SLACK_MS);
}

static void test_auth_hook_denies(void **state) {
  static const struct {
    const char *method;
    int want;
    const char *msg;
  } cases[] = {{M_DENIED, GRPC_STATUS_PERMISSION_DENIED, DENY_MSG},
               {M_WHOAMI, GRPC_STATUS_UNAUTHENTICATED, NOCERT_MSG}};
  for (size_t i = 0; i < 2; i++) {
    int handled_before = H_INT(handler_calls);
    kyso_reply r = h_call(hx.cli, cases[i].method, "x", 1, 5000);
    if (r.grpc_status != cases[i].want || strcmp(r.message, cases[i].msg) != 0)
      fail_msg("%s: got %d '%s', want %d '%s'", cases[i].method, r.grpc_status, r.message,
               cases[i].want, cases[i].msg);
    assert_int_equal(H_INT(handler_calls), handled_before);
    kyso_reply_free(&r);
  }
}

typedef struct slow_caller {
  pthread_t t;
  kyso_client *cli;
  kyso_reply r;
  sem_t *done;
} slow_caller;

static void *slow_main(void *arg) {
  slow_caller *c = arg;
  kyso_err err;
  if (kyso_client_call(c->cli, M_SLOW, (const uint8_t *)"slow", 4, 20000, &c->r, &err) != KYSO_OK)
    c->r.grpc_status = -1;
  if (c->done) sem_post(c->done);
  return NULL;
}

static void test_queue_full(void **state) {
  harness q;
  sem_t done;
  slow_caller a = {0}, b = {0}, c = {0};
  rpc_server_opts o = {.worker_threads = 1, .max_queued_calls = 1};
  assert_int_equal(h_start(&q, &o, 0), 0);
  sem_init(&done, 0, 0);
  a.cli = b.cli = c.cli = q.cli;
  b.done = c.done = &done;
  pthread_create(&a.t, NULL, slow_main, &a);
  while (sem_wait(&H.slow_entered) != 0) {
  }
  /* The only worker is busy and the queue holds one call: of b and c, the
   * one that arrives second is refused at once while the other waits. */
  pthread_create(&b.t, NULL, slow_main, &b);
  pthread_create(&c.t, NULL, slow_main, &c);
  while (sem_wait(&done) != 0) {
  }
  sem_post(&H.slow_release);
  sem_post(&H.slow_release);
  pthread_join(a.t, NULL);
  pthread_join(b.t, NULL);
  pthread_join(c.t, NULL);
  while (sem_wait(&H.slow_entered) != 0) {
  }
  assert_int_equal(a.r.grpc_status, GRPC_STATUS_OK);
  slow_caller *refused = b.r.grpc_status == GRPC_STATUS_OK ? &c : &b;
  slow_caller *served = refused == &b ? &c : &b;
  if (served->r.grpc_status != GRPC_STATUS_OK ||
      refused->r.grpc_status != GRPC_STATUS_RESOURCE_EXHAUSTED ||
      strstr(refused->r.message, "server busy") == NULL)
    fail_msg("got %d and %d '%s', want one OK and one RESOURCE_EXHAUSTED 'server busy'",
             served->r.grpc_status, refused->r.grpc_status, refused->r.message);
  kyso_reply_free(&a.r);
  kyso_reply_free(&b.r);
  kyso_reply_free(&c.r);
  sem_destroy(&done);
  h_stop(&q, 1000);
}

#define THREADS 8
#define CALLS 500

typedef struct echoer {
  pthread_t t;
  kyso_client *cli;
  int id;
  int bad;
} echoer;

static void *echo_main(void *arg) {
  echoer *e = arg;
  char msg[32];
  for (int i = 0; i < CALLS; i++) {
    kyso_reply r;
    kyso_err err;
    int n = snprintf(msg, sizeof(msg), "t%d-%d", e->id, i);
    if (kyso_client_call(e->cli, M_ECHO, (const uint8_t *)msg, (size_t)n, 10000, &r, &err) !=
            KYSO_OK ||
        r.grpc_status != GRPC_STATUS_OK || r.len != (size_t)n || memcmp(r.data, msg, r.len) != 0)
      e->bad++;
    kyso_reply_free(&r);
  }
  return NULL;
}

/* THREADS client threads share one client (one channel) and make CALLS echo
 * calls each; every one must come back with its own bytes. */
static void run_concurrent(kyso_client *cli, const char *what) {
  echoer e[THREADS];
  int bad = 0;
  int64_t t0 = kyso_now_ms();
  for (int i = 0; i < THREADS; i++) {
    e[i] = (echoer){.cli = cli, .id = i};
    pthread_create(&e[i].t, NULL, echo_main, &e[i]);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(e[i].t, NULL);
    bad += e[i].bad;
  }
  int64_t ms = kyso_now_ms() - t0;
  print_message("%s: %d threads x %d echo calls in %lld ms, %.0f calls/s\n", what, THREADS,
                CALLS, (long long)ms, ms > 0 ? THREADS * CALLS * 1000.0 / (double)ms : 0.0);
  if (bad != 0) fail_msg("%s: got %d failed calls, want 0", what, bad);
}

static void test_concurrent(void **state) { run_concurrent(hx.cli, "1 queue thread"); }

static void test_concurrent_two_queues(void **state) {
  harness two;
  rpc_server_opts o = {.cq_threads = 2, .worker_threads = 4};
  assert_int_equal(h_start(&two, &o, 0), 0);
  run_concurrent(two.cli, "2 queue threads, 4 workers");
  h_stop(&two, 1000);
}

static kyso_status allow_all(void *app, rpc_peer *peer, const char *op, kyso_err *err) {
  return KYSO_OK;
}

static void nop_handler(rpc_call *call, void *app) { rpc_call_finish(call, KYSO_OK, NULL, NULL, 0); }

static void test_start_errors(void **state) {
  char in_use[64];
  snprintf(in_use, sizeof(in_use), "127.0.0.1:%d", hx.port);
  const rpc_method one[] = {{"/a.B/C", "c", nop_handler, RPC_UNARY}};
  const rpc_method twice[] = {{"/a.B/C", "c", nop_handler, RPC_UNARY}, {"/a.B/C", "d", nop_handler, RPC_UNARY}};
  const rpc_method unrooted[] = {{"a.B/C", "c", nop_handler, RPC_UNARY}};
  const struct {
    const char *name;
    rpc_server_opts o;
    const rpc_method *m;
    size_t n;
    kyso_status want;
    const char *want_msg;
  } cases[] = {
      {"no address", {.allow_insecure = 1, .auth = allow_all}, one, 1, KYSO_INVALID_ARGUMENT,
       "listen_addr"},
      {"no auth hook", {.listen_addr = "127.0.0.1:0", .allow_insecure = 1}, one, 1,
       KYSO_INVALID_ARGUMENT, "auth hook"},
      {"plaintext not allowed", {.listen_addr = "127.0.0.1:0", .auth = allow_all}, one, 1,
       KYSO_FAILED_PRECONDITION, "plaintext"},
      {"port in use", {.listen_addr = in_use, .allow_insecure = 1, .auth = allow_all}, one, 1,
       KYSO_FAILED_PRECONDITION, in_use},
      {"bad port", {.listen_addr = "127.0.0.1:99999", .allow_insecure = 1, .auth = allow_all},
       one, 1, KYSO_INVALID_ARGUMENT, "127.0.0.1:99999"},
      {"no port", {.listen_addr = "localhost", .allow_insecure = 1, .auth = allow_all},
       one, 1, KYSO_INVALID_ARGUMENT, "localhost"},
      {"unresolvable host",
       {.listen_addr = "no-such-host.invalid:0", .allow_insecure = 1, .auth = allow_all},
       one, 1, KYSO_FAILED_PRECONDITION, "no-such-host.invalid:0"},
      {"method twice", {.listen_addr = "127.0.0.1:0", .allow_insecure = 1, .auth = allow_all},
       twice, 2, KYSO_INVALID_ARGUMENT, "twice"},
      {"unrooted path", {.listen_addr = "127.0.0.1:0", .allow_insecure = 1, .auth = allow_all},
       unrooted, 1, KYSO_INVALID_ARGUMENT, "a.B/C"},
      {"too many threads",
       {.listen_addr = "127.0.0.1:0", .allow_insecure = 1, .auth = allow_all,
        .worker_threads = KYSO_MAX_THREADS + 1},
       one, 1, KYSO_INVALID_ARGUMENT, "threads"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    rpc_server *srv = NULL;
    kyso_err err;
    kyso_err_clear(&err);
    kyso_status st = rpc_server_start(&cases[i].o, cases[i].m, cases[i].n, NULL, &srv, &err);
    if (st != cases[i].want || srv != NULL || strstr(err.msg, cases[i].want_msg) == NULL)
      fail_msg("%s: got %s '%s', want %s naming '%s'", cases[i].name, kyso_strerror(st),
               err.msg, kyso_strerror(cases[i].want), cases[i].want_msg);
    rpc_server_shutdown(srv, 0);
  }
}

static void test_client_errors(void **state) {
  const struct {
    const char *name;
    kyso_client_opts o;
    kyso_status want;
    const char *want_msg;
  } cases[] = {
      {"no target", {.insecure = 1}, KYSO_INVALID_ARGUMENT, "target"},
      {"TLS without CA", {.target = "127.0.0.1:1"}, KYSO_INVALID_ARGUMENT, "ca_file"},
      {"cert without key",
       {.target = "127.0.0.1:1", .ca_file = "/nonexistent/ca.pem", .cert_file = "c.pem"},
       KYSO_INVALID_ARGUMENT, "key"},
      {"missing CA file", {.target = "127.0.0.1:1", .ca_file = "/nonexistent/ca.pem"},
       KYSO_NOT_FOUND, "/nonexistent/ca.pem"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_client *c = NULL;
    kyso_err err;
    kyso_err_clear(&err);
    kyso_status st = kyso_client_open(&cases[i].o, &c, &err);
    if (st != cases[i].want || c != NULL || strstr(err.msg, cases[i].want_msg) == NULL)
      fail_msg("%s: got %s '%s', want %s naming '%s'", cases[i].name, kyso_strerror(st),
               err.msg, kyso_strerror(cases[i].want), cases[i].want_msg);
    kyso_client_close(c);
  }
  kyso_reply r;
  kyso_err err;
  assert_int_equal(kyso_client_call(hx.cli, "no-slash", NULL, 0, 1000, &r, &err),
                   KYSO_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_sizes),
      cmocka_unit_test(test_deadline_seen_by_handler),
      cmocka_unit_test(test_over_limit),
      cmocka_unit_test(test_unimplemented),
      cmocka_unit_test(test_deadline_in_handler),
      cmocka_unit_test(test_auth_hook_denies),
      cmocka_unit_test(test_queue_full),
      cmocka_unit_test(test_concurrent),
      cmocka_unit_test(test_concurrent_two_queues),
      cmocka_unit_test(test_start_errors),
      cmocka_unit_test(test_client_errors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
