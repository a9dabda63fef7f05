/* kyso tests — the RFC 3161 HTTP layer: the server driven by the real client
 * and by raw sockets (hostile and malformed requests), the client against
 * servers that refuse, stall, or answer wrongly, and one HTTPS round trip.
 * Handlers synchronise with tests through semaphores, never through sleeps. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyso/http.h"
#include "kyso/util.h"

#define REQ_TYPE "application/timestamp-query"
#define REP_TYPE "application/timestamp-reply"
#define MAX_BODY 1024
#define BIG_REPLY 4096

/* What the handler saw. */
static struct {
  atomic_int calls;
  pthread_mutex_t mu;
  char path[64];
  sem_t slow_entered; /* posted when a "slow" request reaches the handler */
  sem_t slow_release; /* posted by the test to let it answer */
} H = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint8_t *dup_bytes(const void *p, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (d != NULL && n) memcpy(d, p, n);
  return d;
}

static int body_is(const uint8_t *req, size_t len, const char *s) {
  return len == strlen(s) && memcmp(req, s, len) == 0;
}

/* "busy": 503 + Retry-After 7; "big": BIG_REPLY bytes; "slow": waits for the
 * test; anything else: 200 "ok:" + the request. */
static void handler(void *arg, const char *path, const uint8_t *req, size_t req_len, int *code,
                    uint8_t **body, size_t *body_len, unsigned *retry_after_s) {
  atomic_fetch_add(&H.calls, 1);
  pthread_mutex_lock(&H.mu);
  snprintf(H.path, sizeof(H.path), "%s", path);
  pthread_mutex_unlock(&H.mu);
  if (body_is(req, req_len, "busy")) {
    *code = 503;
    *retry_after_s = 7;
    *body = dup_bytes("overloaded", 10);
    *body_len = 10;
    return;
  }
  if (body_is(req, req_len, "big")) {
    *code = 200;
    *body = calloc(1, BIG_REPLY);
    *body_len = BIG_REPLY;
    return;
  }
  if (body_is(req, req_len, "slow")) {
    sem_post(&H.slow_entered);
    while (sem_wait(&H.slow_release) != 0) {
    }
  }
  *code = 200;
  *body = malloc(req_len + 3);
  memcpy(*body, "ok:", 3);
  memcpy(*body + 3, req, req_len);
  *body_len = req_len + 3;
}

static const char *const tsa_paths[] = {"/tsa", NULL};

static http_server_opts base_opts(void) {
  return (http_server_opts){.listen = "127.0.0.1:0",
                            .paths = tsa_paths,
                            .content_type = REQ_TYPE,
                            .reply_type = REP_TYPE,
                            .max_body = MAX_BODY,
                            .threads = 2,
                            .max_connections = 64,
                            .timeout_s = 30,
                            .handler = handler};
}

static http_server *start(const http_server_opts *o) {
  kyso_err e = {0};
  http_server *s = NULL;
  if (http_server_start(o, &s, &e) != KYSO_OK) fail_msg("http_server_start: %s", e.msg);
  assert_true(http_server_port(s) > 0);
  return s;
}

static int setup(void **state) {
  http_server_opts o = base_opts();
  *state = start(&o);
  return 0;
}

static int teardown(void **state) {
  http_server_stop(*state);
  return 0;
}

static void url_of(const http_server *s, const char *scheme, const char *path, char *out,
                   size_t cap) {
  snprintf(out, cap, "%s://127.0.0.1:%d%s", scheme, http_server_port(s), path);
}

static http_post_opts post_opts(const char *url) {
  return (http_post_opts){.url = url, .content_type = REQ_TYPE, .accept_type = REP_TYPE,
                          .timeout_ms = 5000};
}

/* Raw sockets */

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  return fd;
}

static void raw_send(int fd, const void *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) fail_msg("send: %s", strerror(errno));
    p = (const char *)p + w;
    n -= (size_t)w;
  }
}

/* Reads until the peer closes, cap is reached, or ms pass; returns the count
 * and sets *closed when the connection ended (EOF or reset). */
static size_t raw_read(int fd, char *buf, size_t cap, int ms, int *closed) {
  size_t n = 0;
  int64_t end = kyso_now_ms() + ms;
  *closed = 0;
  while (n + 1 < cap) {
    int left = (int)(end - kyso_now_ms());
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, left) <= 0) break;
    ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) {
      *closed = 1;
      break;
    }
    n += (size_t)r;
  }
  buf[n] = '\0';
  return n;
}

static int status_of(const char *reply) {
  int code = 0;
  if (sscanf(reply, "HTTP/1.%*d %d", &code) != 1) return 0;
  return code;
}

/* Sends req on a fresh connection and reads the reply to its end. */
static int raw_exchange(int port, const char *req, size_t len, char *buf, size_t cap) {
  int closed = 0, fd = raw_connect(port);
  raw_send(fd, req, len);
  raw_read(fd, buf, cap, 5000, &closed);
  close(fd);
  if (!closed) fail_msg("the server did not close the connection; got:\n%s", buf);
  return status_of(buf);
}

/* A port nothing listens on (bound, then released). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Server: good requests */

static void test_post_round_trip(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  int before = atomic_load(&H.calls);
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts o = post_opts(url);
  if (http_post(&o, (const uint8_t *)"hello", 5, &reply, &len, &e) != KYSO_OK)
    fail_msg("http_post: %s", e.msg);
  assert_int_equal(len, 8);
  assert_memory_equal(reply, "ok:hello", 8);
  assert_int_equal(atomic_load(&H.calls), before + 1);
  assert_string_equal(H.path, "/tsa");
  free(reply);
}

/* Server: what it answers itself, and what reaches the handler */

typedef struct raw_case {
  const char *name;
  const char *request;
  int want_status;
  int want_calls;          /* handler calls the request makes */
  const char *want_header; /* a line the reply must hold, or NULL */
} raw_case;

#define POST_TSA "POST /tsa HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"

static const raw_case raw_cases[] = {
    {"GET", "GET /tsa HTTP/1.1\r\nHost: t\r\n\r\n", 405, 0, "\r\nAllow: POST\r\n"},
    {"PUT with a body", "PUT /tsa HTTP/1.1\r\nHost: t\r\nContent-Type: " REQ_TYPE
     "\r\nContent-Length: 4\r\n\r\nabcd", 405, 0, "\r\nAllow: POST\r\n"},
    {"other path", "POST /nope HTTP/1.1\r\nHost: t\r\nContent-Type: " REQ_TYPE
     "\r\nContent-Length: 4\r\n\r\nabcd", 404, 0, NULL},
    {"no content type", POST_TSA "Content-Length: 4\r\n\r\nabcd", 415, 0, NULL},
    {"other content type", POST_TSA "Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nabcd",
     415, 0, NULL},
    {"content type prefix", POST_TSA "Content-Type: " REQ_TYPE "-x\r\nContent-Length: 4\r\n\r\nabcd",
     415, 0, NULL},
    {"content length over max (no body sent)",
     POST_TSA "Content-Type: " REQ_TYPE "\r\nContent-Length: 1000000\r\n\r\n", 413, 0, NULL},
    {"content length max + 1 (no body sent)",
     POST_TSA "Content-Type: " REQ_TYPE "\r\nContent-Length: 1025\r\n\r\n", 413, 0, NULL},
    {"empty body", POST_TSA "Content-Type: " REQ_TYPE "\r\nContent-Length: 0\r\n\r\n", 400, 0,
     NULL},
    {"type in other case, with parameters",
     POST_TSA "Content-Type: Application/Timestamp-Query ; charset=binary\r\n"
              "Content-Length: 4\r\n\r\nabcd",
     200, 1, "\r\nContent-Type: " REP_TYPE "\r\n"},
    {"chunked within max",
     POST_TSA "Content-Type: " REQ_TYPE "\r\nTransfer-Encoding: chunked\r\n\r\n"
              "2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
     200, 1, "\r\nok:abcd"},
    {"handler busy", POST_TSA "Content-Type: " REQ_TYPE "\r\nContent-Length: 4\r\n\r\nbusy", 503,
     1, "\r\nRetry-After: 7\r\n"},
};

static void test_raw_requests(void **state) {
  http_server *s = *state;
  char buf[4096];
  int failed = 0;
  for (size_t i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
    const raw_case *c = &raw_cases[i];
    int before = atomic_load(&H.calls);
    int got = raw_exchange(http_server_port(s), c->request, strlen(c->request), buf, sizeof(buf));
    int calls = atomic_load(&H.calls) - before;
    int bad_header = c->want_header != NULL && strstr(buf, c->want_header) == NULL;
    int no_cache = strstr(buf, "\r\nCache-Control: no-store\r\n") == NULL;
    if (got != c->want_status || calls != c->want_calls || bad_header || no_cache) {
      print_error("%s: got status %d, %d handler calls%s%s; want %d, %d calls, header '%s'\n"
                  "reply:\n%s\n", c->name, got, calls, bad_header ? ", header missing" : "",
                  no_cache ? ", no Cache-Control" : "", c->want_status, c->want_calls,
                  c->want_header ? c->want_header : "-", buf);
      failed = 1;
    }
    /* Refusals are one line of text saying what to send. */
    if (got >= 400 && got < 500 && strstr(buf, "Content-Type: text/plain") == NULL) {
      print_error("%s: refusal is not text/plain:\n%s\n", c->name, buf);
      failed = 1;
    }
  }
  assert_false(failed);
}

static void test_refusal_says_what_to_send(void **state) {
  http_server *s = *state;
  char buf[4096];
  const char *req = POST_TSA "Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nabcd";
  assert_int_equal(raw_exchange(http_server_port(s), req, strlen(req), buf, sizeof(buf)), 415);
  const char *body = strstr(buf, "\r\n\r\n");
  assert_non_null(body);
  assert_string_equal(body + 4, "send the body with Content-Type: " REQ_TYPE "\n");
}

/* A chunked body has no length to refuse up front: the server learns the
 * size while reading, and still answers 413 without keeping the body. */
static void test_chunked_over_max(void **state) {
  http_server *s = *state;
  char req[4096], buf[4096];
  int before = atomic_load(&H.calls);
  int n = snprintf(req, sizeof(req),
                   POST_TSA "Content-Type: " REQ_TYPE "\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
                   MAX_BODY + 1);
  memset(req + n, 'a', MAX_BODY + 1);
  n += MAX_BODY + 1;
  n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n0\r\n\r\n");
  assert_int_equal(raw_exchange(http_server_port(s), req, (size_t)n, buf, sizeof(buf)), 413);
  assert_int_equal(atomic_load(&H.calls), before);
}

/* A peer that keeps sending chunks is cut off after a bounded amount, long
 * before the idle timeout (30 s here), and the handler never runs. */
static void test_chunked_endless_is_cut_off(void **state) {
  http_server *s = *state;
  char chunk[16 + MAX_BODY], buf[4096];
  int closed = 0, before = atomic_load(&H.calls);
  int fd = raw_connect(http_server_port(s));
  const char *head = POST_TSA "Content-Type: " REQ_TYPE "\r\nTransfer-Encoding: chunked\r\n\r\n";
  raw_send(fd, head, strlen(head));
  int n = snprintf(chunk, sizeof(chunk), "%x\r\n", MAX_BODY);
  memset(chunk + n, 'a', MAX_BODY);
  n += MAX_BODY;
  chunk[n++] = '\r';
  chunk[n++] = '\n';
  int64_t t0 = kyso_now_ms();
  /* 64 times max_body: far beyond what the server may read, well within
   * the socket buffers, so the loop never blocks on a server that reads. */
  for (int i = 0; i < 64; i++)
    if (send(fd, chunk, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) break;
  raw_read(fd, buf, sizeof(buf), 5000, &closed);
  int64_t took = kyso_now_ms() - t0;
  close(fd);
  if (!closed) fail_msg("the server kept the connection for %lld ms", (long long)took);
  assert_true(took < 5000);
  assert_int_equal(atomic_load(&H.calls), before);
}

static void test_busy_reaches_client(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts o = post_opts(url);
  assert_int_equal(http_post(&o, (const uint8_t *)"busy", 4, &reply, &len, &e), KYSO_UNAVAILABLE);
  assert_non_null(strstr(e.msg, "503"));
  assert_non_null(strstr(e.msg, url));
  assert_null(reply);
}

/* A wrong path through the client: FAILED_PRECONDITION carrying the
 * server's own hint. */
static void test_client_sees_404_hint(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  url_of(s, "http", "/nope", url, sizeof(url));
  http_post_opts o = post_opts(url);
  assert_int_equal(http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e),
                   KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(e.msg, "404"));
  assert_non_null(strstr(e.msg, "POST to /tsa"));
}

/* A client that sends an over-size body with its headers still gets the
 * 413, not a reset connection. */
static void test_client_sees_413(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t big[4 * MAX_BODY];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  memset(big, 'a', sizeof(big));
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts o = post_opts(url);
  int before = atomic_load(&H.calls);
  for (int i = 0; i < 20; i++) {
    kyso_status got = http_post(&o, big, sizeof(big), &reply, &len, &e);
    if (got != KYSO_FAILED_PRECONDITION || strstr(e.msg, "413") == NULL)
      fail_msg("try %d: got %s (%s), want failed precondition naming 413", i,
               kyso_strerror(got), e.msg);
  }
  assert_int_equal(atomic_load(&H.calls), before);
}

typedef struct poster {
  pthread_t t;
  char url[128];
  char body[16];
  kyso_status st;
  kyso_err err;
  uint8_t *reply;
  size_t len;
} poster;

static void *post_main(void *arg) {
  poster *p = arg;
  http_post_opts o = post_opts(p->url);
  p->st = http_post(&o, (const uint8_t *)p->body, strlen(p->body), &p->reply, &p->len, &p->err);
  return NULL;
}

static void test_concurrent_clients(void **state) {
  http_server *s = *state;
  poster p[20];
  memset(p, 0, sizeof(p));
  for (int i = 0; i < 20; i++) {
    url_of(s, "http", "/tsa", p[i].url, sizeof(p[i].url));
    snprintf(p[i].body, sizeof(p[i].body), "client-%02d", i);
    assert_int_equal(pthread_create(&p[i].t, NULL, post_main, &p[i]), 0);
  }
  for (int i = 0; i < 20; i++) pthread_join(p[i].t, NULL);
  for (int i = 0; i < 20; i++) {
    char want[32];
    snprintf(want, sizeof(want), "ok:%s", p[i].body);
    if (p[i].st != KYSO_OK) fail_msg("client %d: %s", i, p[i].err.msg);
    assert_int_equal(p[i].len, strlen(want));
    assert_memory_equal(p[i].reply, want, p[i].len);
    free(p[i].reply);
  }
}

/* An idle connection neither blocks the only worker thread nor lives past
 * the timeout. */
static void test_idle_connection(void **state) {
  http_server_opts o = base_opts();
  o.threads = 1;
  o.timeout_s = 1;
  http_server *s = start(&o);
  char url[128], buf[64];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  int closed = 0;
  int64_t t0 = kyso_now_ms();
  int idle = raw_connect(http_server_port(s));
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts po = post_opts(url);
  if (http_post(&po, (const uint8_t *)"meanwhile", 9, &reply, &len, &e) != KYSO_OK)
    fail_msg("http_post beside an idle connection: %s", e.msg);
  free(reply);
  assert_true(kyso_now_ms() - t0 < 1000); /* answered before the idle one timed out */
  raw_read(idle, buf, sizeof(buf), 5000, &closed);
  int64_t took = kyso_now_ms() - t0;
  close(idle);
  if (!closed) fail_msg("idle connection still open after %lld ms", (long long)took);
  assert_int_equal(buf[0], '\0'); /* closed without a reply */
  assert_true(took >= 900);
  http_server_stop(s);
}

static void test_stop_with_idle_connection(void **state) {
  http_server_opts o = base_opts();
  http_server *s = start(&o);
  char buf[64];
  int closed = 0;
  int idle = raw_connect(http_server_port(s));
  raw_send(idle, "POST /tsa HTTP/1.1\r\n", 20); /* and never the rest */
  int64_t t0 = kyso_now_ms();
  http_server_stop(s);
  assert_true(kyso_now_ms() - t0 < 2000);
  raw_read(idle, buf, sizeof(buf), 2000, &closed);
  close(idle);
  assert_true(closed);
}

typedef struct stopper {
  pthread_t t;
  http_server *s;
  sem_t started;
} stopper;

static void *stop_main(void *arg) {
  stopper *st = arg;
  sem_post(&st->started);
  http_server_stop(st->s);
  return NULL;
}

/* Stop lets a request already in the handler send its reply. */
static void test_stop_finishes_inflight(void **state) {
  http_server_opts o = base_opts();
  http_server *s = start(&o);
  poster p = {0};
  stopper st = {.s = s};
  url_of(s, "http", "/tsa", p.url, sizeof(p.url));
  snprintf(p.body, sizeof(p.body), "slow");
  sem_init(&st.started, 0, 0);
  assert_int_equal(pthread_create(&p.t, NULL, post_main, &p), 0);
  while (sem_wait(&H.slow_entered) != 0) {
  }
  assert_int_equal(pthread_create(&st.t, NULL, stop_main, &st), 0);
  while (sem_wait(&st.started) != 0) {
  }
  sem_post(&H.slow_release);
  pthread_join(st.t, NULL);
  pthread_join(p.t, NULL);
  sem_destroy(&st.started);
  if (p.st != KYSO_OK) fail_msg("in-flight request: %s", p.err.msg);
  assert_int_equal(p.len, 7);
  assert_memory_equal(p.reply, "ok:slow", 7);
  free(p.reply);
}

/* Server: options */

static void test_port_in_use(void **state) {
  http_server *s = *state;
  char listen[64];
  kyso_err e = {0};
  http_server *s2 = NULL;
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", http_server_port(s));
  http_server_opts o = base_opts();
  o.listen = listen;
  assert_int_equal(http_server_start(&o, &s2, &e), KYSO_UNAVAILABLE);
  assert_null(s2);
  assert_non_null(strstr(e.msg, listen));
}

static void test_bad_options(void **state) {
  static const char *const bad_listen[] = {"nonsense", "127.0.0.1", "127.0.0.1:", ":80",
                                           "127.0.0.1:70000", "127.0.0.1:8x", "::1:80",
                                           "[::1]80", "[::1]:", "localhost:80",
                                           "300.1.1.1:80", ""};
  int failed = 0;
  for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++) {
    http_server_opts o = base_opts();
    http_server *s = NULL;
    kyso_err e = {0};
    o.listen = bad_listen[i];
    kyso_status got = http_server_start(&o, &s, &e);
    if (got != KYSO_INVALID_ARGUMENT || s != NULL) {
      print_error("listen '%s': got %s (%s), want invalid argument\n", bad_listen[i],
                  kyso_strerror(got), e.msg);
      failed = 1;
    }
    http_server_stop(s);
  }
  struct {
    const char *cert, *key;
  } bad_tls[] = {{"/nonexistent/cert.pem", "/nonexistent/key.pem"},
                 {"/nonexistent/cert.pem", NULL},
                 {NULL, "/nonexistent/key.pem"},
                 {"/dev/null", "/dev/null"}};
  for (size_t i = 0; i < sizeof(bad_tls) / sizeof(bad_tls[0]); i++) {
    http_server_opts o = base_opts();
    http_server *s = NULL;
    kyso_err e = {0};
    o.tls_cert = bad_tls[i].cert;
    o.tls_key = bad_tls[i].key;
    kyso_status got = http_server_start(&o, &s, &e);
    if (got != KYSO_INVALID_ARGUMENT || s != NULL) {
      print_error("TLS %s / %s: got %s (%s), want invalid argument\n", bad_tls[i].cert,
                  bad_tls[i].key, kyso_strerror(got), e.msg);
      failed = 1;
    }
    http_server_stop(s);
  }
  assert_false(failed);
}

static void test_other_addresses(void **state) {
  static const char *const good[] = {"0.0.0.0:0", "[::1]:0"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    http_server_opts o = base_opts();
    http_server *s = NULL;
    kyso_err e = {0};
    o.listen = good[i];
    kyso_status got = http_server_start(&o, &s, &e);
    if (got == KYSO_UNAVAILABLE && good[i][0] == '[') {
      print_message("no IPv6 loopback here (%s); skipping [::1]\n", e.msg);
      continue;
    }
    if (got != KYSO_OK) fail_msg("listen '%s': %s", good[i], e.msg);
    assert_true(http_server_port(s) > 0);
    http_server_stop(s);
  }
}

/* Client */

static void test_client_refused(void **state) {
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/tsa", free_port());
  http_post_opts o = post_opts(url);
  int64_t t0 = kyso_now_ms();
  assert_int_equal(http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e), KYSO_UNAVAILABLE);
  assert_true(kyso_now_ms() - t0 < 2000);
  assert_non_null(strstr(e.msg, url));
  assert_null(reply);
  assert_int_equal(len, 0);
}

/* The password in a URL is kept out of messages. */
static void test_client_hides_password(void **state) {
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  snprintf(url, sizeof(url), "http://user:s3cret@127.0.0.1:%d/tsa", free_port());
  http_post_opts o = post_opts(url);
  assert_int_equal(http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e), KYSO_UNAVAILABLE);
  assert_null(strstr(e.msg, "s3cret"));
  assert_non_null(strstr(e.msg, "127.0.0.1"));
}

/* A peer that accepts (in the kernel's backlog) and never answers. */
static void test_client_no_answer(void **state) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof(a);
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(fd, 8), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/tsa", ntohs(a.sin_port));
  http_post_opts o = post_opts(url);
  o.timeout_ms = 500;
  int64_t t0 = kyso_now_ms();
  assert_int_equal(http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e), KYSO_UNAVAILABLE);
  int64_t took = kyso_now_ms() - t0;
  close(fd);
  assert_true(took >= 450);
  assert_true(took < 500 + 1000);
  assert_non_null(strstr(e.msg, url));
  assert_non_null(strstr(e.msg, "500 ms"));
}

static void test_client_reply_too_big(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts o = post_opts(url);
  o.max_reply = BIG_REPLY - 1;
  assert_int_equal(http_post(&o, (const uint8_t *)"big", 3, &reply, &len, &e),
                   KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(e.msg, "larger than"));
  assert_null(reply);
  o.max_reply = BIG_REPLY; /* exactly the cap is fine */
  if (http_post(&o, (const uint8_t *)"big", 3, &reply, &len, &e) != KYSO_OK)
    fail_msg("reply of exactly max_reply: %s", e.msg);
  assert_int_equal(len, BIG_REPLY);
  free(reply);
}

static void test_client_wrong_type(void **state) {
  http_server *s = *state;
  char url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  url_of(s, "http", "/tsa", url, sizeof(url));
  http_post_opts o = post_opts(url);
  o.accept_type = "application/json";
  assert_int_equal(http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e),
                   KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(e.msg, REP_TYPE));
  assert_null(reply);
}

static void test_client_bad_urls(void **state) {
  static const char *const bad[] = {"ftp://x", "", "not a url", "file:///etc/passwd",
                                    "gopher://x/", "http://"};
  int failed = 0;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t *reply = NULL;
    size_t len = 0;
    kyso_err e = {0};
    http_post_opts o = post_opts(bad[i]);
    kyso_status got = http_post(&o, (const uint8_t *)"x", 1, &reply, &len, &e);
    if (got != KYSO_INVALID_ARGUMENT) {
      print_error("url '%s': got %s (%s), want invalid argument\n", bad[i], kyso_strerror(got),
                  e.msg);
      failed = 1;
    }
  }
  assert_false(failed);
}

/* HTTPS with throw-away certificates made by the openssl CLI. */

static char tls_dir[64];

static int make_cert(const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -days 1 "
           "-keyout %s/%s-key.pem -out %s/%s-cert.pem >/dev/null 2>&1",
           tls_dir, name, tls_dir, name);
  return system(cmd) == 0;
}

static void test_https(void **state) {
  char cert[128], key[128], other[128], other_key[128], url[128];
  uint8_t *reply = NULL;
  size_t len = 0;
  kyso_err e = {0};
  snprintf(tls_dir, sizeof(tls_dir), "/tmp/kyso-http-XXXXXX");
  assert_non_null(mkdtemp(tls_dir));
  snprintf(cert, sizeof(cert), "%s/server-cert.pem", tls_dir);
  snprintf(key, sizeof(key), "%s/server-key.pem", tls_dir);
  snprintf(other, sizeof(other), "%s/other-cert.pem", tls_dir);
  snprintf(other_key, sizeof(other_key), "%s/other-key.pem", tls_dir);
  int made = make_cert("server") && make_cert("other");
  if (made) {
    http_server_opts o = base_opts();
    o.tls_cert = cert;
    o.tls_key = key;
    http_server *s = start(&o);
    url_of(s, "https", "/tsa", url, sizeof(url));
    http_post_opts po = post_opts(url);
    po.ca_file = cert;
    if (http_post(&po, (const uint8_t *)"tls", 3, &reply, &len, &e) != KYSO_OK)
      fail_msg("HTTPS round trip: %s", e.msg);
    assert_int_equal(len, 6);
    assert_memory_equal(reply, "ok:tls", 6);
    free(reply);
    reply = NULL;
    po.ca_file = other;
    assert_int_equal(http_post(&po, (const uint8_t *)"tls", 3, &reply, &len, &e),
                     KYSO_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "TLS verification"));
    assert_non_null(strstr(e.msg, other));
    assert_null(reply);
    /* A key that is not the certificate's is refused at start. */
    o.tls_key = other_key;
    http_server *s2 = NULL;
    assert_int_equal(http_server_start(&o, &s2, &e), KYSO_INVALID_ARGUMENT);
    http_server_stop(s);
  }
  unlink(cert);
  unlink(key);
  unlink(other);
  unlink(other_key);
  rmdir(tls_dir);
  if (!made) skip();
}

int main(void) {
  /* Loopback tests must not go through a proxy from the environment. */
  static const char *const proxies[] = {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                        "ALL_PROXY", "all_proxy"};
  for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++) unsetenv(proxies[i]);
  sem_init(&H.slow_entered, 0, 0);
  sem_init(&H.slow_release, 0, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_post_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_raw_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusal_says_what_to_send, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chunked_over_max, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chunked_endless_is_cut_off, setup, teardown),
      cmocka_unit_test_setup_teardown(test_busy_reaches_client, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_sees_404_hint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_sees_413, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
      cmocka_unit_test(test_idle_connection),
      cmocka_unit_test(test_stop_with_idle_connection),
      cmocka_unit_test(test_stop_finishes_inflight),
      cmocka_unit_test_setup_teardown(test_port_in_use, setup, teardown),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_other_addresses),
      cmocka_unit_test(test_client_refused),
      cmocka_unit_test(test_client_hides_password),
      cmocka_unit_test(test_client_no_answer),
      cmocka_unit_test_setup_teardown(test_client_reply_too_big, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_wrong_type, setup, teardown),
      cmocka_unit_test(test_client_bad_urls),
      cmocka_unit_test(test_https),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
