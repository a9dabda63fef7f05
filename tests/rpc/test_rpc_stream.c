/* kyso tests — streaming calls end to end: client-streaming sums, server-
 * streaming counts, flow control against a slow reader, the message limit and
 * the auth hook on streaming methods. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/status.h>
#include <openssl/evp.h>

#include "kyso/limits.h"
#include "kyso/util.h"
#include "stream_methods.h"

static harness hx; /* one server for the group */

#define MiB (1u << 20)
#define TIMEOUT_MS 120000 /* a hang guard; these calls end on their own */

static int group_setup(void **state) {
  s_init();
  return s_start(&hx, NULL);
}

static int group_teardown(void **state) {
  h_stop(&hx, 1000);
  return 0;
}

static kyso_reply finish(kyso_stream *s) {
  kyso_reply r;
  kyso_err err;
  kyso_err_clear(&err);
  s_must(kyso_stream_finish(s, &r, &err), &err, "kyso_stream_finish");
  return r;
}

/* The size of message i of a sum case: mostly small, every big_every-th 1 MiB. */
static size_t msg_size(size_t i, size_t big_every) {
  return big_every && i % big_every == 0 ? MiB : (i * 37) % 3000;
}

static void test_sum(void **state) {
  static const struct {
    const char *name;
    size_t messages;
    size_t big_every;
  } cases[] = {
      {"no message", 0, 0},
      {"one empty message", 1, 0},
      {"one 1 MiB message", 1, 1},
      {"1000 messages, every 100th 1 MiB", 1000, 100},
  };
  uint8_t *buf = malloc(MiB);
  assert_non_null(buf);
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    kyso_err err;
    uint8_t want_sha[32];
    uint64_t want_bytes = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    int done = s_done();
    kyso_stream *s = s_open_stream(hx.cli, M_SUM, TIMEOUT_MS);
    for (size_t i = 0; i < cases[c].messages; i++) {
      size_t n = msg_size(i, cases[c].big_every);
      s_fill(buf, n, (uint32_t)i);
      EVP_DigestUpdate(md, buf, n);
      want_bytes += n;
      s_must(kyso_stream_send(s, buf, n, &err), &err, cases[c].name);
    }
    EVP_DigestFinal_ex(md, want_sha, NULL);
    EVP_MD_CTX_free(md);
    s_must(kyso_stream_close_send(s, &err), &err, "close_send");
    uint8_t *data = NULL, *none = NULL;
    size_t len = 0, none_len = 0;
    int end = 0, end2 = 0;
    s_must(kyso_stream_recv(s, &data, &len, &end, &err), &err, "recv the sum");
    s_must(kyso_stream_recv(s, &none, &none_len, &end2, &err), &err, "recv the end");
    kyso_reply r = finish(s);
    s_wait_done(done);
    s_sum_reply got;
    memset(&got, 0, sizeof(got));
    if (len == sizeof(got)) memcpy(&got, data, len);
    if (r.grpc_status != GRPC_STATUS_OK || end || len != sizeof(got) || !end2 || none != NULL ||
        got.messages != cases[c].messages || got.bytes != want_bytes ||
        memcmp(got.sha256, want_sha, 32) != 0)
      fail_msg("%s: got status %d '%s', %zu-byte reply (end %d, then end %d) counting %llu "
               "messages / %llu bytes; want OK, %zu messages / %llu bytes with their SHA-256",
               cases[c].name, r.grpc_status, r.message, len, end, end2,
               (unsigned long long)got.messages, (unsigned long long)got.bytes,
               cases[c].messages, (unsigned long long)want_bytes);
    free(data);
  }
  free(buf);
}

static void test_count(void **state) {
  static const uint32_t ns[] = {0, 1, 500};
  for (size_t c = 0; c < sizeof(ns) / sizeof(ns[0]); c++) {
    kyso_err err;
    uint8_t req[4] = {(uint8_t)(ns[c] >> 24), (uint8_t)(ns[c] >> 16), (uint8_t)(ns[c] >> 8),
                      (uint8_t)ns[c]};
    kyso_stream *s = s_open_stream(hx.cli, M_COUNT, TIMEOUT_MS);
    s_must(kyso_stream_send(s, req, 4, &err), &err, "send the count");
    s_must(kyso_stream_close_send(s, &err), &err, "close_send");
    uint32_t got = 0, bad_at = UINT32_MAX;
    for (;;) {
      uint8_t *data;
      size_t len;
      int end;
      s_must(kyso_stream_recv(s, &data, &len, &end, &err), &err, "recv");
      if (end) break;
      uint32_t v = len == 4 ? (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                                  (uint32_t)data[2] << 8 | data[3]
                            : UINT32_MAX;
      if (v != got && bad_at == UINT32_MAX) bad_at = got;
      got++;
      free(data);
    }
    kyso_reply r = finish(s);
    if (r.grpc_status != GRPC_STATUS_OK || got != ns[c] || bad_at != UINT32_MAX)
      fail_msg("count %u: got status %d '%s' and %u messages (first out of order at %d); "
               "want OK and 0..%u in order", ns[c], r.grpc_status, r.message, got,
               bad_at == UINT32_MAX ? -1 : (int)bad_at, ns[c]);
  }
}

/* 200 x 1 MiB to a client that works on each message before taking the next:
 * the handler may never run far ahead, and never has two writes under way. */
static void test_slow_reader_bounds_memory(void **state) {
  const s_big_req q = {200, MiB};
  uint8_t *want = malloc(MiB), digest[32];
  kyso_err err;
  assert_non_null(want);
  s_reset();
  int done = s_done();
  kyso_stream *s = s_open_stream(hx.cli, M_BIG, TIMEOUT_MS);
  s_must(kyso_stream_send(s, (const uint8_t *)&q, sizeof(q), &err), &err, "send");
  s_must(kyso_stream_close_send(s, &err), &err, "close_send");
  uint32_t got = 0, bad = 0;
  for (;;) {
    uint8_t *data;
    size_t len;
    int end;
    s_must(kyso_stream_recv(s, &data, &len, &end, &err), &err, "recv");
    if (end) break;
    /* The work: check the content and hash it a few times over. */
    s_fill(want, MiB, got);
    if (len != MiB || memcmp(data, want, MiB) != 0) bad++;
    for (int k = 0; k < 4; k++) EVP_Digest(data, len, digest, NULL, EVP_sha256(), NULL);
    free(data);
    s_received();
    got++;
  }
  kyso_reply r = finish(s);
  s_wait_done(done);
  free(want);
  pthread_mutex_lock(&S.mu);
  int max_in_flight = S.max_in_flight;
  long max_ahead = S.max_ahead, written = S.written;
  pthread_mutex_unlock(&S.mu);
  print_message("slow reader: the server ran at most %ld MiB ahead of the client\n", max_ahead);
  if (r.grpc_status != GRPC_STATUS_OK || got != q.count || bad != 0 || written != q.count)
    fail_msg("got status %d '%s', %u messages (%u wrong), %ld written; want OK and %u intact",
             r.grpc_status, r.message, got, bad, written, q.count);
  /* Flow control holds the server to what the HTTP/2 windows buffer (a few
   * MiB): far from the 200 MiB it would queue if writes did not wait. */
  if (max_in_flight != 1 || max_ahead > 16)
    fail_msg("got %d writes in flight at once and the server %ld MiB ahead; want 1 and at "
             "most 16", max_in_flight, max_ahead);
}

/* Sends, ignoring the outcome: the call may already have failed. */
static void send_any(kyso_stream *s, const uint8_t *p, size_t n) {
  kyso_err err;
  if (kyso_stream_send(s, p, n, &err) != KYSO_OK) {
  }
}

static void close_any(kyso_stream *s) {
  kyso_err err;
  if (kyso_stream_close_send(s, &err) != KYSO_OK) {
  }
}

static void test_over_limit(void **state) {
  const size_t len = 5 * MiB;
  uint8_t *big = calloc(1, len);
  kyso_client *roomy = h_client(&hx, NULL, NULL, NULL, 8 * MiB);
  assert_non_null(big);
  assert_non_null(roomy);
  static const struct {
    const char *name;
    int roomy_client;
    const char *want_msg; /* the core's words: which side refused */
    kyso_status want_handler;
  } cases[] = {
      {"server refuses (client allows 8 MiB)", 1, "Received message larger than max",
       KYSO_RESOURCE_EXHAUSTED},
      {"client refuses (4 MiB cap)", 0, "Sent message larger than max", KYSO_CANCELLED},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    int done = s_done();
    kyso_stream *s = s_open_stream(cases[c].roomy_client ? roomy : hx.cli, M_SUM, TIMEOUT_MS);
    send_any(s, (const uint8_t *)"a", 1);
    s_wait_reads(1); /* the handler runs and reads */
    send_any(s, big, len);
    close_any(s);
    kyso_reply r = finish(s);
    s_wait_done(done);
    pthread_mutex_lock(&S.mu);
    kyso_status hst = S.last_status;
    pthread_mutex_unlock(&S.mu);
    if (r.grpc_status != GRPC_STATUS_RESOURCE_EXHAUSTED ||
        strstr(r.message, cases[c].want_msg) == NULL || hst != cases[c].want_handler)
      fail_msg("%s: got %d '%s', handler read %s; want RESOURCE_EXHAUSTED '%s', handler %s",
               cases[c].name, r.grpc_status, r.message, kyso_strerror(hst), cases[c].want_msg,
               kyso_strerror(cases[c].want_handler));
    s_reset();
  }
  kyso_client_close(roomy);
  free(big);
}

static void test_auth_hook_denies_streams(void **state) {
  static const char *paths[] = {M_SUM_DENIED, M_COUNT_DENIED};
  for (size_t c = 0; c < 2; c++) {
    pthread_mutex_lock(&S.mu);
    int entered = S.handler_calls;
    pthread_mutex_unlock(&S.mu);
    uint8_t req[4] = {0, 0, 0, 3};
    kyso_stream *s = s_open_stream(hx.cli, paths[c], TIMEOUT_MS);
    send_any(s, req, sizeof(req));
    close_any(s);
    kyso_reply r = finish(s);
    pthread_mutex_lock(&S.mu);
    int entered_after = S.handler_calls;
    pthread_mutex_unlock(&S.mu);
    if (r.grpc_status != GRPC_STATUS_PERMISSION_DENIED || strcmp(r.message, S_DENY_MSG) != 0 ||
        entered_after != entered)
      fail_msg("%s: got %d '%s' with %d handler runs; want PERMISSION_DENIED '%s', none",
               paths[c], r.grpc_status, r.message, entered_after - entered, S_DENY_MSG);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sum),
      cmocka_unit_test(test_count),
      cmocka_unit_test(test_slow_reader_bounds_memory),
      cmocka_unit_test(test_over_limit),
      cmocka_unit_test(test_auth_hook_denies_streams),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
