/* cluster — mutual TLS between Raft nodes: a raft_uv_transport whose
 * connections are TLS 1.3 over TCP, both sides presenting a certificate
 * that must chain to the cluster's CA (and, when a list is given, be one
 * of the nodes' certificates).
 *
 * libraft only reads, writes and closes the uv_stream_t a transport hands
 * it, so each connection gives it one end of a socket pair; this side
 * pumps the other end through OpenSSL memory BIOs to the TCP socket, all on
 * the loop thread. The connecting node sends its Raft id and address
 * inside the TLS channel (the preamble) once the handshake is done; the
 * accepting node hands the connection to libraft only after reading it.
 * A connection that has not finished its handshake and preamble within
 * HANDSHAKE_MS is dropped. Addresses are numeric (IPv4 host:port or
 * [IPv6]:port): nothing blocks the loop on name resolution. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "kyso/log.h"

#define HANDSHAKE_MS 5000
#define PREAMBLE_MAGIC "KYR1"
#define PREAMBLE_MAX (4 + 8 + 2 + CLUSTER__WIRE_ADDRESS)
#define PUMP_CHUNK 16384
#define WARN_EVERY_MS 10000

typedef struct tt_conn tt_conn;

typedef struct tt {
  struct raft_uv_transport *t;
  uv_loop_t *loop;
  SSL_CTX *ctx;
  uint8_t (*allowed)[32];
  size_t n_allowed;
  raft_id id;
  char address[CLUSTER__WIRE_ADDRESS];
  uv_tcp_t listener;
  int listening, listener_open;
  raft_uv_accept_cb accept_cb;
  tt_conn *conns;
  int closing;
  raft_uv_transport_close_cb close_cb;
  uint64_t last_warn_ms; /* refused connections are logged at most every WARN_EVERY_MS */
  unsigned quiet;        /* refusals not logged since */
} tt;

enum { C_CONNECTING, C_HANDSHAKE, C_PREAMBLE, C_OPEN, C_CLOSED };

struct tt_conn {
  tt *tt;
  int outgoing, state;
  struct raft_uv_connect *req; /* outgoing, until its callback ran */
  raft_uv_connect_cb cb;
  raft_id peer_id;
  char peer_addr[CLUSTER__WIRE_ADDRESS];
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_timer_t timer;
  uv_pipe_t inner;      /* our end of the socket pair */
  uv_pipe_t *outer;     /* libraft's end, raft_malloc()ed; NULL once handed over */
  int inner_open;
  SSL *ssl;
  BIO *rbio, *wbio;
  uint8_t pre[PREAMBLE_MAX];
  size_t pre_len;
  int handles;          /* our uv handles not yet closed */
  tt_conn *prev, *next;
};

typedef struct wreq {
  uv_write_t req;
  uv_buf_t buf;
} wreq;

/* A peer that keeps retrying with a bad certificate must not flood the log. */
static void tt_warn(tt *x, const char *fmt, ...) KYSO_PRINTF(2, 3);
static void tt_warn(tt *x, const char *fmt, ...) {
  char msg[512];
  uint64_t now = uv_now(x->loop);
  if (x->last_warn_ms != 0 && now - x->last_warn_ms < WARN_EVERY_MS) {
    x->quiet++;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (x->quiet > 0)
    kyso_log(KYSO_LOG_WARN, "cluster: %s (and %u more refused Raft connections)", msg, x->quiet);
  else
    kyso_log(KYSO_LOG_WARN, "cluster: %s", msg);
  x->last_warn_ms = now ? now : 1;
  x->quiet = 0;
}

static void maybe_closed(tt *x) {
  if (x->closing && x->conns == NULL && !x->listener_open && x->close_cb != NULL) {
    raft_uv_transport_close_cb cb = x->close_cb;
    x->close_cb = NULL;
    cb(x->t);
  }
}

static void conn_free(tt_conn *c) {
  tt *x = c->tt;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    x->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  SSL_free(c->ssl); /* frees the BIOs too */
  free(c);
  maybe_closed(x);
}

static void on_handle_closed(uv_handle_t *h) {
  tt_conn *c = h->data;
  if (--c->handles == 0) conn_free(c);
}

static void on_outer_closed(uv_handle_t *h) { raft_free(h); }

/* Reports an outgoing connection's outcome to libraft, once. */
static void report(tt_conn *c, uv_stream_t *stream, int status) {
  if (!c->outgoing || c->req == NULL) return;
  struct raft_uv_connect *req = c->req;
  c->req = NULL;
  c->cb(req, stream, status);
}

static void conn_close(tt_conn *c, int status) {
  if (c->state == C_CLOSED) return;
  report(c, NULL, status);
  c->state = C_CLOSED;
  if (c->outer != NULL) { /* made, never handed to libraft */
    uv_close((uv_handle_t *)c->outer, on_outer_closed);
    c->outer = NULL;
  }
  if (c->inner_open) uv_close((uv_handle_t *)&c->inner, on_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_written(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  tt_conn *c = req->data;
  free(w->buf.base);
  free(w);
  if (status < 0 && status != UV_ECANCELED) conn_close(c, RAFT_NOCONNECTION);
}

static int write_copy(tt_conn *c, uv_stream_t *s, const void *data, size_t len) {
  wreq *w = malloc(sizeof(*w));
  char *copy = malloc(len ? len : 1);
  if (w == NULL || copy == NULL) {
    free(w);
    free(copy);
    return -1;
  }
  memcpy(copy, data, len);
  w->buf = uv_buf_init(copy, (unsigned)len);
  w->req.data = c;
  if (uv_write(&w->req, s, &w->buf, 1, on_written) != 0) {
    free(copy);
    free(w);
    return -1;
  }
  return 0;
}

/* Sends what OpenSSL wrote into wbio to the peer. */
static int flush_tls(tt_conn *c) {
  char buf[PUMP_CHUNK];
  int n;
  while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0)
    if (write_copy(c, (uv_stream_t *)&c->tcp, buf, (size_t)n) != 0) return -1;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = malloc(PUMP_CHUNK);
  buf->len = buf->base != NULL ? PUMP_CHUNK : 0;
}

/* libraft wrote to its end: encrypt it to the peer. */
static void on_inner_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tt_conn *c = s->data;
  if (n < 0) {
    conn_close(c, RAFT_NOCONNECTION); /* libraft closed its end */
  } else if (n > 0 && c->state == C_OPEN) {
    if (SSL_write(c->ssl, buf->base, (int)n) != (int)n || flush_tls(c) != 0)
      conn_close(c, RAFT_NOCONNECTION);
  }
  free(buf->base);
}

/* The socket pair; its far end becomes libraft's stream. */
static int open_pair(tt_conn *c) {
  uv_os_sock_t fds[2];
  if (uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, UV_NONBLOCK_PIPE) != 0) return -1;
  c->outer = raft_malloc(sizeof(*c->outer));
  if (c->outer == NULL || uv_pipe_init(c->tt->loop, &c->inner, 0) != 0) {
    raft_free(c->outer);
    c->outer = NULL;
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  c->inner.data = c;
  c->inner_open = 1;
  c->handles++;
  uv_pipe_init(c->tt->loop, c->outer, 0);
  if (uv_pipe_open(&c->inner, fds[1]) != 0 || uv_pipe_open(c->outer, fds[0]) != 0 ||
      uv_read_start((uv_stream_t *)&c->inner, on_alloc, on_inner_read) != 0)
    return -1;
  uv_timer_stop(&c->timer);
  c->state = C_OPEN;
  return 0;
}

/* Plaintext from the peer, once the channel is up. */
static void deliver(tt_conn *c, const uint8_t *p, size_t n) {
  tt *x = c->tt;
  if (c->state == C_PREAMBLE) {
    size_t take = n < PREAMBLE_MAX - c->pre_len ? n : PREAMBLE_MAX - c->pre_len;
    memcpy(c->pre + c->pre_len, p, take);
    c->pre_len += take;
    if (c->pre_len < 14) return;
    if (memcmp(c->pre, PREAMBLE_MAGIC, 4) != 0) {
      tt_warn(x, "a peer's Raft connection did not start with kyso's preamble: dropped");
      conn_close(c, RAFT_NOCONNECTION);
      return;
    }
    size_t alen = (size_t)c->pre[12] << 8 | c->pre[13];
    if (alen >= CLUSTER__WIRE_ADDRESS) {
      conn_close(c, RAFT_NOCONNECTION);
      return;
    }
    if (c->pre_len < 14 + alen) return;
    c->peer_id = 0;
    for (int i = 0; i < 8; i++) c->peer_id = c->peer_id << 8 | c->pre[4 + i];
    memcpy(c->peer_addr, c->pre + 14, alen);
    c->peer_addr[alen] = '\0';
    size_t used = 14 + alen - (c->pre_len - take);
    if (open_pair(c) != 0) {
      conn_close(c, RAFT_NOCONNECTION);
      return;
    }
    uv_pipe_t *outer = c->outer;
    c->outer = NULL;
    x->accept_cb(x->t, c->peer_id, c->peer_addr, (uv_stream_t *)outer);
    p += used;
    n -= used;
  }
  if (n > 0 && c->state == C_OPEN &&
      write_copy(c, (uv_stream_t *)&c->inner, p, n) != 0)
    conn_close(c, RAFT_NOCONNECTION);
}

static int peer_allowed(tt_conn *c) {
  tt *x = c->tt;
  X509 *cert = SSL_get0_peer_certificate(c->ssl);
  if (cert == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK) return 0;
  if (x->n_allowed == 0) return 1;
  uint8_t md[32];
  unsigned len = 0;
  if (!X509_digest(cert, EVP_sha256(), md, &len) || len != 32) return 0;
  for (size_t i = 0; i < x->n_allowed; i++)
    if (memcmp(md, x->allowed[i], 32) == 0) return 1;
  return 0;
}

static void handshake_done(tt_conn *c) {
  tt *x = c->tt;
  if (!peer_allowed(c)) {
    tt_warn(x, "refused a Raft connection %s %s: its certificate is not one of the cluster's nodes'",
         c->outgoing ? "to" : "from", c->outgoing ? c->peer_addr : "a peer");
    conn_close(c, RAFT_NOCONNECTION);
    return;
  }
  if (!c->outgoing) {
    c->state = C_PREAMBLE;
    return;
  }
  uint8_t pre[PREAMBLE_MAX];
  size_t alen = strlen(x->address);
  memcpy(pre, PREAMBLE_MAGIC, 4);
  for (int i = 0; i < 8; i++) pre[4 + i] = (uint8_t)((uint64_t)x->id >> (56 - 8 * i));
  pre[12] = (uint8_t)(alen >> 8);
  pre[13] = (uint8_t)alen;
  memcpy(pre + 14, x->address, alen);
  if (SSL_write(c->ssl, pre, (int)(14 + alen)) != (int)(14 + alen) || flush_tls(c) != 0 ||
      open_pair(c) != 0) {
    conn_close(c, RAFT_NOCONNECTION);
    return;
  }
  uv_pipe_t *outer = c->outer;
  c->outer = NULL;
  report(c, (uv_stream_t *)outer, 0);
}

static void pump(tt_conn *c) {
  if (c->state == C_HANDSHAKE) {
    int r = SSL_do_handshake(c->ssl);
    if (flush_tls(c) != 0) {
      conn_close(c, RAFT_NOCONNECTION);
      return;
    }
    if (r != 1) {
      if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ) return;
      unsigned long e = ERR_peek_last_error();
      tt_warn(c->tt, "TLS handshake %s %s failed: %s", c->outgoing ? "to" : "from",
           c->outgoing ? c->peer_addr : "a peer",
           e ? ERR_reason_error_string(e) : "connection closed");
      ERR_clear_error();
      conn_close(c, RAFT_NOCONNECTION);
      return;
    }
    handshake_done(c);
  }
  uint8_t buf[PUMP_CHUNK];
  while (c->state == C_PREAMBLE || c->state == C_OPEN) {
    int n = SSL_read(c->ssl, buf, sizeof(buf));
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      if (flush_tls(c) != 0 || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)) {
        ERR_clear_error();
        conn_close(c, RAFT_NOCONNECTION);
      }
      return;
    }
    deliver(c, buf, (size_t)n);
  }
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tt_conn *c = s->data;
  if (n < 0) {
    conn_close(c, RAFT_NOCONNECTION);
  } else if (n > 0 && c->state != C_CLOSED) {
    if (BIO_write(c->rbio, buf->base, (int)n) != (int)n)
      conn_close(c, RAFT_NOCONNECTION);
    else
      pump(c);
  }
  free(buf->base);
}

static void on_deadline(uv_timer_t *t) {
  tt_conn *c = t->data;
  tt_warn(c->tt, "a Raft connection %s %s did not finish its TLS handshake within %d ms: dropped",
       c->outgoing ? "to" : "from", c->outgoing ? c->peer_addr : "a peer", HANDSHAKE_MS);
  conn_close(c, RAFT_NOCONNECTION);
}

static tt_conn *conn_new(tt *x, int outgoing) {
  tt_conn *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->tt = x;
  c->outgoing = outgoing;
  c->ssl = SSL_new(x->ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    SSL_free(c->ssl);
    free(c);
    return NULL;
  }
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  if (outgoing)
    SSL_set_connect_state(c->ssl);
  else
    SSL_set_accept_state(c->ssl);
  uv_tcp_init(x->loop, &c->tcp);
  uv_timer_init(x->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  uv_timer_start(&c->timer, on_deadline, HANDSHAKE_MS, 0);
  c->next = x->conns;
  if (x->conns != NULL) x->conns->prev = c;
  x->conns = c;
  return c;
}

/* The Raft part of a configuration address ("RAFT" or "RAFT/RPC"). */
static int parse_addr(const char *wire, struct sockaddr_storage *sa) {
  char address[CLUSTER_MAX_ADDRESS + 1], rpc[CLUSTER_MAX_ADDRESS + 1];
  char host[CLUSTER_MAX_ADDRESS + 1];
  cluster__split_address(wire, address, rpc);
  const char *colon = strrchr(address, ':');
  if (colon == NULL) return -1;
  size_t hl = (size_t)(colon - address);
  memcpy(host, address, hl);
  host[hl] = '\0';
  int port = atoi(colon + 1);
  if (port <= 0 || port > 65535) return -1;
  if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
    host[hl - 1] = '\0';
    return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)sa);
  }
  return uv_ip4_addr(host, port, (struct sockaddr_in *)sa);
}

static void on_tcp_connected(uv_connect_t *req, int status) {
  tt_conn *c = req->data;
  if (c->state == C_CLOSED) return;
  if (status < 0) {
    conn_close(c, RAFT_NOCONNECTION);
    return;
  }
  c->state = C_HANDSHAKE;
  uv_tcp_nodelay(&c->tcp, 1); /* Raft's small messages must not wait for Nagle */
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read) != 0) {
    conn_close(c, RAFT_NOCONNECTION);
    return;
  }
  pump(c);
}

static int tt_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb) {
  tt *x = t->impl;
  struct sockaddr_storage sa;
  if (x->closing) return RAFT_CANCELED;
  if (parse_addr(address, &sa) != 0) {
    snprintf(t->errmsg, sizeof(t->errmsg), "'%.120s' is not a numeric host:port", address);
    return RAFT_NOCONNECTION;
  }
  tt_conn *c = conn_new(x, 1);
  if (c == NULL) return RAFT_NOMEM;
  c->req = req;
  c->cb = cb;
  c->peer_id = id;
  snprintf(c->peer_addr, sizeof(c->peer_addr), "%s", address);
  c->connect_req.data = c;
  if (uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&sa, on_tcp_connected) != 0) {
    c->req = NULL; /* failed synchronously: libraft hears it from the return value */
    conn_close(c, RAFT_NOCONNECTION);
    return RAFT_NOCONNECTION;
  }
  return 0;
}

static void on_incoming(uv_stream_t *server, int status) {
  tt *x = server->data;
  if (status < 0 || x->closing) return;
  tt_conn *c = conn_new(x, 0);
  if (c == NULL) return;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || uv_tcp_nodelay(&c->tcp, 1) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read) != 0) {
    conn_close(c, RAFT_NOCONNECTION);
    return;
  }
  c->state = C_HANDSHAKE;
}

static int tt_init(struct raft_uv_transport *t, raft_id id, const char *address) {
  tt *x = t->impl;
  x->id = id;
  snprintf(x->address, sizeof(x->address), "%s", address);
  return 0;
}

static int tt_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb) {
  tt *x = t->impl;
  struct sockaddr_storage sa;
  if (parse_addr(x->address, &sa) != 0) {
    snprintf(t->errmsg, sizeof(t->errmsg), "'%.120s' is not a numeric host:port", x->address);
    return RAFT_INVALID;
  }
  x->accept_cb = cb;
  uv_tcp_init(x->loop, &x->listener);
  x->listener.data = x;
  x->listener_open = 1;
  int rv = uv_tcp_bind(&x->listener, (struct sockaddr *)&sa, 0);
  if (rv == 0) rv = uv_listen((uv_stream_t *)&x->listener, 128, on_incoming);
  if (rv != 0) {
    snprintf(t->errmsg, sizeof(t->errmsg), "cannot listen on %.120s: %.100s", x->address,
             uv_strerror(rv));
    return RAFT_IOERR;
  }
  x->listening = 1;
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  tt *x = h->data;
  x->listener_open = 0;
  maybe_closed(x);
}

static void tt_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb) {
  tt *x = t->impl;
  x->closing = 1;
  x->close_cb = cb;
  if (x->listener_open) uv_close((uv_handle_t *)&x->listener, on_listener_closed);
  for (tt_conn *c = x->conns; c != NULL; c = c->next) conn_close(c, RAFT_CANCELED);
  maybe_closed(x);
}

static kyso_status ssl_fail(kyso_err *err, const char *what, const char *file) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cluster TLS: cannot %s '%s': %s", what, file,
                   e ? ERR_reason_error_string(e) : "unknown error");
}

kyso_status cluster__tls_transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                                        const cluster_tls *tls, kyso_err *err) {
  tt *x = calloc(1, sizeof(*x));
  kyso_status st = KYSO_OK;
  if (x == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  x->t = t;
  x->loop = loop;
  if ((x->ctx = SSL_CTX_new(TLS_method())) == NULL) {
    st = kyso_fail(err, KYSO_INTERNAL, "cluster TLS: cannot make an SSL context");
    goto out;
  }
  SSL_CTX_set_min_proto_version(x->ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(x->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  if (SSL_CTX_use_certificate_chain_file(x->ctx, tls->cert_file) != 1)
    st = ssl_fail(err, "load the node certificate chain", tls->cert_file);
  else if (SSL_CTX_use_PrivateKey_file(x->ctx, tls->key_file, SSL_FILETYPE_PEM) != 1 ||
           SSL_CTX_check_private_key(x->ctx) != 1)
    st = ssl_fail(err, "load the node key (or it does not match the certificate)", tls->key_file);
  else if (SSL_CTX_load_verify_locations(x->ctx, tls->ca_file, NULL) != 1)
    st = ssl_fail(err, "load the cluster CA", tls->ca_file);
  if (st != KYSO_OK) goto out;
  if (tls->n_allowed > 0) {
    if ((x->allowed = malloc(tls->n_allowed * 32)) == NULL) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
    memcpy(x->allowed, tls->allowed, tls->n_allowed * 32);
    x->n_allowed = tls->n_allowed;
  }
  memset(t, 0, sizeof(*t));
  t->impl = x;
  t->init = tt_init;
  t->listen = tt_listen;
  t->connect = tt_connect;
  t->close = tt_close;
  x = NULL;
out:
  if (x != NULL) {
    SSL_CTX_free(x->ctx);
    free(x);
  }
  return st;
}

void cluster__tls_transport_free(struct raft_uv_transport *t) {
  tt *x = t->impl;
  if (x == NULL) return;
  SSL_CTX_free(x->ctx);
  free(x->allowed);
  free(x);
  t->impl = NULL;
}
