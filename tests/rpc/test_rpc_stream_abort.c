/* kyso tests — streams that end early: the client cancels, the deadline
 * passes, the server shuts down around a stream. Handlers must learn of it at
 * their next read or write, promptly, and still end their call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/status.h>

#include "kyso/util.h"
#include "rpc_internal.h"
#include "stream_methods.h"

#define MiB (1u << 20)
#define TIMEOUT_MS 120000 /* a hang guard; these calls end on their own */
#define PROMPT_MS 5000    /* "promptly": far below any timeout in play */

static harness hx; /* one server for the cancellation and deadline tests */

static int group_setup(void **state) {
  s_init();
  return s_start(&hx, NULL);
}

static int group_teardown(void **state) {
  h_stop(&hx, 1000);
  return 0;
}

/* Starts Big (count x size) and takes n of its messages. */
static kyso_stream *big_stream(kyso_client *cli, uint32_t count, uint32_t size,
                               int64_t timeout_ms, int n) {
  const s_big_req q = {count, size};
  kyso_err err;
  kyso_stream *s = s_open_stream(cli, M_BIG, timeout_ms);
  s_must(kyso_stream_send(s, (const uint8_t *)&q, sizeof(q), &err), &err, "send");
  s_must(kyso_stream_close_send(s, &err), &err, "close_send");
  for (int i = 0; i < n; i++) {
    uint8_t *data;
    size_t len;
    int end;
    s_must(kyso_stream_recv(s, &data, &len, &end, &err), &err, "recv");
    if (end) fail_msg("Big ended after %d messages, want at least %d", i, n);
    free(data);
    s_received();
  }
  return s;
}

/* Starts Sum and sends n small messages, which its handler has read on return. */
static kyso_stream *sum_stream(kyso_client *cli, int64_t timeout_ms, int n) {
  kyso_err err;
  kyso_stream *s = s_open_stream(cli, M_SUM, timeout_ms);
  for (int i = 0; i < n; i++)
    s_must(kyso_stream_send(s, (const uint8_t *)"abc", 3, &err), &err, "send");
  s_wait_reads(n);
  return s;
}

static void last_end(kyso_status *st, char *msg, size_t size, int64_t *at_ms) {
  pthread_mutex_lock(&S.mu);
  *st = S.last_status;
  snprintf(msg, size, "%s", S.last_msg);
  *at_ms = S.last_done_ms;
  pthread_mutex_unlock(&S.mu);
}

static void test_client_cancels(void **state) {
  static const struct {
    const char *name;
    int server_streaming; /* else client-streaming: the handler is reading */
  } cases[] = {{"cancel while the server writes", 1}, {"cancel while the server reads", 0}};
  for (size_t c = 0; c < 2; c++) {
    s_reset();
    int done = s_done();
    kyso_stream *s = cases[c].server_streaming ? big_stream(hx.cli, 1000, MiB, TIMEOUT_MS, 2)
                                               : sum_stream(hx.cli, TIMEOUT_MS, 3);
    int64_t t0 = kyso_now_ms();
    kyso_stream_cancel(s);
    s_wait_done(done);
    kyso_status st;
    char msg[KYSO_ERR_MSG_MAX];
    int64_t at;
    last_end(&st, msg, sizeof(msg), &at);
    /* A cancelled client stream is not a half-close: no OK for half the data. */
    if (st != KYSO_CANCELLED || at - t0 > PROMPT_MS)
      fail_msg("%s: handler ended with %s '%s' after %lld ms; want CANCELLED within %d ms",
               cases[c].name, kyso_strerror(st), msg, (long long)(at - t0), PROMPT_MS);
  }
}

static void test_deadline_mid_stream(void **state) {
  static const struct {
    const char *name;
    int server_streaming;
    int64_t timeout_ms;
  } cases[] = {{"client stream, server waits for a message", 0, 300},
               {"server stream, client stops reading", 1, 500}};
  for (size_t c = 0; c < 2; c++) {
    kyso_err err;
    kyso_reply r;
    s_reset();
    int done = s_done();
    kyso_stream *s = cases[c].server_streaming
                         ? big_stream(hx.cli, 1000, MiB, cases[c].timeout_ms, 1)
                         : sum_stream(hx.cli, cases[c].timeout_ms, 1);
    int64_t t0 = kyso_now_ms();
    /* Each blocks until the call ends, and the deadline is what ends it:
     * Sum waits for more messages (no half-close yet: finish would send it),
     * Big for the client to read on. */
    if (!cases[c].server_streaming) {
      uint8_t *data = NULL;
      size_t len;
      int end;
      if (kyso_stream_recv(s, &data, &len, &end, &err) != KYSO_OK || !end || data != NULL)
        fail_msg("%s: got %zu bytes before the deadline, want none", cases[c].name, len);
    }
    s_must(kyso_stream_finish(s, &r, &err), &err, "finish");
    int64_t took = kyso_now_ms() - t0;
    s_wait_done(done);
    kyso_status st;
    char msg[KYSO_ERR_MSG_MAX];
    int64_t at;
    last_end(&st, msg, sizeof(msg), &at);
    if (r.grpc_status != GRPC_STATUS_DEADLINE_EXCEEDED || st != KYSO_DEADLINE_EXCEEDED ||
        took > cases[c].timeout_ms + PROMPT_MS)
      fail_msg("%s: client got %d '%s' after %lld ms, handler %s '%s'; want "
               "DEADLINE_EXCEEDED on both sides", cases[c].name, r.grpc_status, r.message,
               (long long)took, kyso_strerror(st), msg);
  }
}

/* A client that sets no deadline and never half-closes cannot hold a worker
 * forever: the server's max_call_ms ends the call. */
static void test_max_call_time_without_deadline(void **state) {
  harness h;
  kyso_err err;
  kyso_reply r;
  rpc_server_opts o = {.max_call_ms = 400};
  assert_int_equal(s_start(&h, &o), 0);
  s_reset();
  int done = s_done();
  kyso_stream *s = sum_stream(h.cli, 0 /* no deadline */, 1);
  int64_t t0 = kyso_now_ms();
  uint8_t *data = NULL;
  size_t len = 0;
  int end = 0;
  if (kyso_stream_recv(s, &data, &len, &end, &err) != KYSO_OK || !end || data != NULL)
    fail_msg("got %zu bytes from a call the server should have ended", len);
  s_must(kyso_stream_finish(s, &r, &err), &err, "finish");
  int64_t took = kyso_now_ms() - t0;
  s_wait_done(done);
  kyso_status st;
  char msg[KYSO_ERR_MSG_MAX];
  int64_t at;
  last_end(&st, msg, sizeof(msg), &at);
  if (r.grpc_status != GRPC_STATUS_DEADLINE_EXCEEDED || st != KYSO_DEADLINE_EXCEEDED ||
      took > 400 + PROMPT_MS)
    fail_msg("client got %d '%s' after %lld ms, handler %s '%s'; want DEADLINE_EXCEEDED on "
             "both sides within %d ms", r.grpc_status, r.message, (long long)took,
             kyso_strerror(st), msg, 400 + PROMPT_MS);
  kyso_reply_free(&r);
  h_stop(&h, 1000);
}

typedef struct stopper {
  pthread_t t;
  rpc_server *srv;
  int grace_ms;
} stopper;

static void *stop_main(void *arg) {
  stopper *s = arg;
  rpc_server_shutdown(s->srv, s->grace_ms);
  return NULL;
}

static void test_shutdown_lets_stream_finish(void **state) {
  harness h;
  kyso_err err;
  uint8_t *data[3] = {NULL, NULL, NULL};
  size_t len[3] = {0, 0, 0};
  int end[3] = {0, 0, 0};
  assert_int_equal(s_start(&h, NULL), 0);
  kyso_stream *s = s_open_stream(h.cli, M_GATE, TIMEOUT_MS);
  s_must(kyso_stream_send(s, (const uint8_t *)"go", 2, &err), &err, "send");
  s_must(kyso_stream_close_send(s, &err), &err, "close_send");
  s_must(kyso_stream_recv(s, &data[0], &len[0], &end[0], &err), &err, "recv first");
  stopper st = {.srv = h.srv, .grace_ms = 60000};
  pthread_create(&st.t, NULL, stop_main, &st);
  rpc__server_wait_state(h.srv, RPC__DRAINING);
  sem_post(&S.gate); /* the handler writes its second message while draining */
  kyso_status rs = kyso_stream_recv(s, &data[1], &len[1], &end[1], &err);
  if (rs == KYSO_OK) rs = kyso_stream_recv(s, &data[2], &len[2], &end[2], &err);
  kyso_reply r;
  kyso_status fs = kyso_stream_finish(s, &r, &err);
  pthread_join(st.t, NULL);
  kyso_client_close(h.cli);
  int ok = rs == KYSO_OK && fs == KYSO_OK && r.grpc_status == GRPC_STATUS_OK && !end[0] &&
           len[0] == 5 && memcmp(data[0], "first", 5) == 0 && !end[1] && len[1] == 6 &&
           memcmp(data[1], "second", 6) == 0 && end[2];
  for (int i = 0; i < 3; i++) free(data[i]);
  if (!ok)
    fail_msg("stream across shutdown: got %s/%s, status %d '%s', ends %d %d %d; want both "
             "messages, the end and OK", kyso_strerror(rs), kyso_strerror(fs), r.grpc_status,
             r.message, end[0], end[1], end[2]);
}

static void test_grace_expiry_cancels_stream(void **state) {
  harness h;
  kyso_err err;
  kyso_reply r;
  assert_int_equal(s_start(&h, NULL), 0);
  s_reset();
  int done = s_done();
  kyso_stream *s = sum_stream(h.cli, TIMEOUT_MS, 1); /* and never half-closes */
  stopper st = {.srv = h.srv, .grace_ms = 200};
  pthread_create(&st.t, NULL, stop_main, &st);
  rpc__server_wait_state(h.srv, RPC__CANCELLING);
  s_wait_done(done);
  kyso_status fs = kyso_stream_finish(s, &r, &err);
  pthread_join(st.t, NULL);
  kyso_client_close(h.cli);
  kyso_status hs;
  char msg[KYSO_ERR_MSG_MAX];
  int64_t at;
  last_end(&hs, msg, sizeof(msg), &at);
  if (hs != KYSO_CANCELLED || strstr(msg, "shutting down") == NULL || fs != KYSO_OK ||
      r.grpc_status == GRPC_STATUS_OK)
    fail_msg("stream past the grace: handler %s '%s', client %d '%s'; want the handler's "
             "read CANCELLED by the shutdown and the client not OK", kyso_strerror(hs), msg,
             r.grpc_status, r.message);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_cancels),
      cmocka_unit_test(test_deadline_mid_stream),
      cmocka_unit_test(test_max_call_time_without_deadline),
      cmocka_unit_test(test_shutdown_lets_stream_finish),
      cmocka_unit_test(test_grace_expiry_cancels_stream),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
