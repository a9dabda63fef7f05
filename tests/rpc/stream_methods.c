/* kyso tests — streaming methods and their bookkeeping (see stream_methods.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kyso/util.h"
#include "stream_methods.h"

s_state S;

/* A hang guard for waits on S.cond: far above any legitimate wait, even
 * under ThreadSanitizer. */
#define S_GUARD_S 60

static void entered(void) {
  pthread_mutex_lock(&S.mu);
  S.handler_calls++;
  pthread_cond_broadcast(&S.cond);
  pthread_mutex_unlock(&S.mu);
}

/* Ends the call, then tells the test how. */
static void end_call(rpc_call *call, kyso_status st, const char *msg, const void *resp,
                     size_t len) {
  char copy[KYSO_ERR_MSG_MAX];
  snprintf(copy, sizeof(copy), "%s", msg ? msg : "");
  rpc_call_finish(call, st, copy, resp, len);
  pthread_mutex_lock(&S.mu);
  S.done++;
  S.last_status = st;
  snprintf(S.last_msg, sizeof(S.last_msg), "%s", copy);
  S.last_done_ms = kyso_now_ms();
  pthread_cond_broadcast(&S.cond);
  pthread_mutex_unlock(&S.mu);
}

static void sum(rpc_call *call, void *app) {
  kyso_status st = KYSO_OK;
  kyso_err err;
  s_sum_reply r;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  kyso_err_clear(&err);
  memset(&r, 0, sizeof(r));
  entered();
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  for (;;) {
    const uint8_t *p;
    size_t n;
    int end;
    if ((st = rpc_call_read(call, &p, &n, &end, &err)) != KYSO_OK || end) break;
    EVP_DigestUpdate(md, p, n);
    r.bytes += n;
    r.messages++;
    pthread_mutex_lock(&S.mu);
    S.reads++;
    pthread_cond_broadcast(&S.cond);
    pthread_mutex_unlock(&S.mu);
  }
  EVP_DigestFinal_ex(md, r.sha256, NULL);
  EVP_MD_CTX_free(md);
  end_call(call, st, err.msg, st == KYSO_OK ? &r : NULL, st == KYSO_OK ? sizeof(r) : 0);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void count(rpc_call *call, void *app) {
  kyso_status st = KYSO_OK;
  kyso_err err;
  size_t len;
  const uint8_t *req = rpc_call_request(call, &len);
  kyso_err_clear(&err);
  entered();
  if (len != 4) {
    end_call(call, KYSO_INVALID_ARGUMENT, "want a 4-byte count", NULL, 0);
    return;
  }
  for (uint32_t i = 0, n = be32(req); i < n && st == KYSO_OK; i++) {
    uint8_t m[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
    st = rpc_call_write(call, m, sizeof(m), &err);
  }
  end_call(call, st, err.msg, NULL, 0);
}

void s_fill(uint8_t *p, size_t n, uint32_t i) {
  uint32_t x = i * 2654435761u + 1;
  for (size_t k = 0; k < n; k++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[k] = (uint8_t)x;
  }
}

static void big(rpc_call *call, void *app) {
  kyso_status st = KYSO_OK;
  kyso_err err;
  s_big_req q;
  size_t len;
  const uint8_t *req = rpc_call_request(call, &len);
  kyso_err_clear(&err);
  entered();
  if (len != sizeof(q)) {
    end_call(call, KYSO_INVALID_ARGUMENT, "want an s_big_req", NULL, 0);
    return;
  }
  memcpy(&q, req, sizeof(q));
  uint8_t *buf = malloc(q.size ? q.size : 1);
  for (uint32_t i = 0; i < q.count && st == KYSO_OK; i++) {
    s_fill(buf, q.size, i);
    pthread_mutex_lock(&S.mu);
    if (++S.in_flight > S.max_in_flight) S.max_in_flight = S.in_flight;
    pthread_mutex_unlock(&S.mu);
    st = rpc_call_write(call, buf, q.size, &err);
    pthread_mutex_lock(&S.mu);
    S.in_flight--;
    if (st == KYSO_OK) S.written++;
    if (S.written - S.received > S.max_ahead) S.max_ahead = S.written - S.received;
    pthread_cond_broadcast(&S.cond);
    pthread_mutex_unlock(&S.mu);
  }
  free(buf);
  end_call(call, st, err.msg, NULL, 0);
}

static void gate(rpc_call *call, void *app) {
  kyso_status st;
  kyso_err err;
  kyso_err_clear(&err);
  entered();
  if ((st = rpc_call_write(call, (const uint8_t *)"first", 5, &err)) == KYSO_OK) {
    while (sem_wait(&S.gate) != 0 && errno == EINTR) {
    }
    st = rpc_call_write(call, (const uint8_t *)"second", 6, &err);
  }
  end_call(call, st, err.msg, NULL, 0);
}

static kyso_status hook(void *app, rpc_peer *peer, const char *operation, kyso_err *err) {
  if (strcmp(operation, "deny") == 0) return kyso_fail(err, KYSO_PERMISSION_DENIED, S_DENY_MSG);
  return KYSO_OK;
}

static const rpc_method methods[] = {
    {M_SUM, "sum", sum, RPC_CLIENT_STREAMING},
    {M_COUNT, "count", count, RPC_SERVER_STREAMING},
    {M_BIG, "big", big, RPC_SERVER_STREAMING},
    {M_GATE, "gate", gate, RPC_SERVER_STREAMING},
    {M_SUM_DENIED, "deny", sum, RPC_CLIENT_STREAMING},
    {M_COUNT_DENIED, "deny", count, RPC_SERVER_STREAMING},
};

void s_init(void) {
  memset(&S, 0, sizeof(S));
  pthread_mutex_init(&S.mu, NULL);
  pthread_cond_init(&S.cond, NULL);
  sem_init(&S.gate, 0, 0);
}

void s_reset(void) {
  pthread_mutex_lock(&S.mu);
  S.reads = S.written = S.received = S.max_ahead = 0;
  S.in_flight = S.max_in_flight = 0;
  pthread_mutex_unlock(&S.mu);
}

int s_start(harness *h, const rpc_server_opts *opts) {
  rpc_server_opts o;
  kyso_err err;
  kyso_err_clear(&err);
  memset(h, 0, sizeof(*h));
  if (opts != NULL)
    o = *opts;
  else
    memset(&o, 0, sizeof(o));
  o.listen_addr = "127.0.0.1:0";
  o.allow_insecure = 1;
  o.auth = hook;
  if (rpc_server_start(&o, methods, sizeof(methods) / sizeof(methods[0]), NULL, &h->srv,
                       &err) != KYSO_OK) {
    fprintf(stderr, "rpc_server_start: %s\n", err.msg);
    return -1;
  }
  h->port = rpc_server_port(h->srv);
  snprintf(h->target, sizeof(h->target), "127.0.0.1:%d", h->port);
  return (h->cli = h_client(h, NULL, NULL, NULL, 0)) != NULL ? 0 : -1;
}

/* Waits on S.cond (S.mu held) until pred holds; fails the test on the guard. */
#define WAIT_UNTIL(pred, what)                                                   \
  do {                                                                           \
    struct timespec until_;                                                      \
    clock_gettime(CLOCK_REALTIME, &until_);                                      \
    until_.tv_sec += S_GUARD_S;                                                  \
    while (!(pred))                                                              \
      if (pthread_cond_timedwait(&S.cond, &S.mu, &until_) == ETIMEDOUT) {        \
        pthread_mutex_unlock(&S.mu);                                             \
        fail_msg("no %s within %d s: the server hangs", what, S_GUARD_S);        \
      }                                                                          \
  } while (0)

int s_wait_done(int done) {
  pthread_mutex_lock(&S.mu);
  WAIT_UNTIL(S.done > done, "handler end");
  int now = S.done;
  pthread_mutex_unlock(&S.mu);
  return now;
}

void s_wait_reads(long n) {
  pthread_mutex_lock(&S.mu);
  WAIT_UNTIL(S.reads >= n, "read by Sum");
  pthread_mutex_unlock(&S.mu);
}

int s_done(void) {
  pthread_mutex_lock(&S.mu);
  int d = S.done;
  pthread_mutex_unlock(&S.mu);
  return d;
}

void s_received(void) {
  pthread_mutex_lock(&S.mu);
  S.received++;
  pthread_mutex_unlock(&S.mu);
}

kyso_stream *s_open_stream(kyso_client *cli, const char *method, int64_t timeout_ms) {
  kyso_stream *s = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  if (kyso_stream_open(cli, method, timeout_ms, &s, &err) != KYSO_OK)
    fail_msg("kyso_stream_open %s: %s", method, err.msg);
  return s;
}

void s_must(kyso_status st, const kyso_err *err, const char *what) {
  if (st != KYSO_OK) fail_msg("%s: %s %s", what, kyso_strerror(st), err->msg);
}
