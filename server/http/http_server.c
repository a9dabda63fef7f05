/* kyso — the HTTP endpoint for RFC 3161 on libmicrohttpd. Anything that is
 * not a POST of the right type, path and size is answered here, before its
 * body is read, so the handler only ever sees well-formed requests. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http_internal.h"
#include "kyso/http.h"
#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/pem.h"
#include "kyso/util.h"

#define HTTP__DEFAULT_THREADS 2
#define HTTP__DEFAULT_CONNECTIONS 64
#define HTTP__DEFAULT_TIMEOUT_S 10
#define HTTP__TEXT "text/plain; charset=utf-8"

/* Replies the server makes itself; built once at start and shared by every
 * connection (MHD responses are reference-counted and may be queued often). */
enum { R_405, R_404, R_415, R_413, R_400, R_500, R_COUNT };
static const unsigned canned_code[R_COUNT] = {405, 404, 415, 413, 400, 500};

/* One request on one connection, from its headers to its completion. */
typedef struct http__conn {
  kyso_buf body;  /* capped at max_body */
  size_t seen;    /* body bytes read, kept or not */
  int too_big;
  int counted;    /* the handler ran: counted in busy until the reply is done */
} http__conn;

struct http_server {
  struct MHD_Daemon *mhd;
  char *listen;         /* for messages */
  char **paths;         /* NULL-terminated copy */
  char *content_type;
  char *reply_type;
  size_t max_body;
  unsigned timeout_s;
  http_handler handler;
  void *arg;
  kyso_buf cert, key;   /* NUL-terminated PEM, handed to MHD by pointer */
  struct MHD_Response *canned[R_COUNT];
  int port;
  int sync_ready;       /* mu and idle initialised */
  pthread_mutex_t mu;
  pthread_cond_t idle;  /* signalled when busy drops to 0 */
  unsigned busy;        /* requests between handler call and reply completion */
  char last_log[256];   /* MHD's latest complaint, for start failures */
};

int http__media_type_is(const char *value, const char *want) {
  if (value == NULL || want == NULL) return 0;
  size_t n = strcspn(value, ";");
  while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
  while (n > 0 && (*value == ' ' || *value == '\t')) {
    value++;
    n--;
  }
  return n == strlen(want) && strncasecmp(value, want, n) == 0;
}

/* "a.b.c.d:port" or "[v6]:port", numeric hosts only: a name could resolve to
 * several addresses and we bind exactly one. */
static kyso_status parse_listen(const char *s, struct sockaddr_storage *ss, int *v6,
                                kyso_err *err) {
  char host[INET6_ADDRSTRLEN];
  const char *h = s, *port = NULL;
  size_t hlen = 0;
  memset(ss, 0, sizeof(*ss));
  *v6 = s[0] == '[';
  if (*v6) {
    const char *end = strchr(s, ']');
    if (end == NULL || end[1] != ':') goto bad;
    h = s + 1;
    hlen = (size_t)(end - h);
    port = end + 2;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon == NULL) goto bad;
    hlen = (size_t)(colon - s);
    port = colon + 1;
    if (memchr(h, ':', hlen) != NULL) goto bad; /* an IPv6 host needs brackets */
  }
  size_t plen = strlen(port);
  if (hlen == 0 || hlen >= sizeof(host) || plen == 0 || plen > 5 ||
      strspn(port, "0123456789") != plen || atol(port) > 65535)
    goto bad;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  if (*v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)atol(port));
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) goto bad;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atol(port));
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad;
  }
  return KYSO_OK;
bad:
  return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "http listen address '%s' is not HOST:PORT with a numeric IPv4 host or "
                   "a bracketed IPv6 one (0.0.0.0:8318, [::1]:8318) and a port from 0 to "
                   "65535", s);
}

static kyso_status check_opts(const http_server_opts *o, kyso_err *err) {
  if (o == NULL || o->listen == NULL || o->listen[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "http server: a listen address is required");
  if (o->paths == NULL || o->paths[0] == NULL || o->handler == NULL ||
      o->content_type == NULL || o->content_type[0] == '\0' || o->reply_type == NULL ||
      o->reply_type[0] == '\0' || o->max_body == 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "http server on '%s': paths, a handler, content and reply types "
                     "and a max_body above 0 are required", o->listen);
  for (const char *const *p = o->paths; *p != NULL; p++)
    if ((*p)[0] != '/')
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "http server on '%s': path '%s' must start with '/'", o->listen, *p);
  unsigned threads = o->threads ? o->threads : HTTP__DEFAULT_THREADS;
  unsigned conns = o->max_connections ? o->max_connections : HTTP__DEFAULT_CONNECTIONS;
  if (threads > KYSO_MAX_THREADS || conns < threads)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "http server on '%s': %u threads and %u connections (at most %d "
                     "threads, and at least one connection per thread)",
                     o->listen, threads, conns, KYSO_MAX_THREADS);
  int cert = o->tls_cert != NULL && o->tls_cert[0] != '\0';
  int key = o->tls_key != NULL && o->tls_key[0] != '\0';
  if (cert != key)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "http server on '%s': HTTPS needs both a certificate and a key file "
                     "(or neither, for plain HTTP)", o->listen);
  return KYSO_OK;
}

/* MHD's own messages (bind failures, TLS handshakes, API misuse) go to our log. */
KYSO_PRINTF(2, 0)
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  http_server *s = cls;
  char line[sizeof(s->last_log)];
  vsnprintf(line, sizeof(line), fmt, ap);
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
  pthread_mutex_lock(&s->mu);
  memcpy(s->last_log, line, n + 1);
  pthread_mutex_unlock(&s->mu);
  kyso_log(KYSO_LOG_WARN, "http server on %s: %s", s->listen, line);
}

static int path_ok(const http_server *s, const char *url) {
  for (char **p = s->paths; *p != NULL; p++)
    if (strcmp(*p, url) == 0) return 1;
  return 0;
}

/* The declared length is over max (MHD has already refused malformed ones). */
static int length_over(const char *v, size_t max) {
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  return errno == ERANGE || n > max;
}

/* Which canned reply the headers alone call for, or -1 to read the body. */
static int check_headers(const http_server *s, struct MHD_Connection *c, const char *url,
                         const char *method) {
  if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) return R_405;
  if (!path_ok(s, url)) return R_404;
  const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  if (!http__media_type_is(type, s->content_type)) return R_415;
  const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (len != NULL && length_over(len, s->max_body)) return R_413;
  return -1;
}

/* Runs the handler on a complete body and queues what it returns. */
static enum MHD_Result answer(http_server *s, struct MHD_Connection *c, const char *url,
                              http__conn *st) {
  int code = 500;
  uint8_t *body = NULL;
  size_t len = 0;
  unsigned retry = 0;
  struct MHD_Response *r = NULL;
  enum MHD_Result rc = MHD_NO;
  char num[16];

  pthread_mutex_lock(&s->mu);
  s->busy++;
  pthread_mutex_unlock(&s->mu);
  st->counted = 1;
  s->handler(s->arg, url, st->body.data, st->body.len, &code, &body, &len, &retry);
  kyso_buf_free(&st->body, 0);
  if (code < 200 || code > 599) {
    kyso_log(KYSO_LOG_ERROR, "http server on %s: the handler for %s set status %d; answering 500",
             s->listen, url, code);
    free(body);
    rc = MHD_queue_response(c, canned_code[R_500], s->canned[R_500]);
    goto out;
  }
  if (body == NULL) len = 0;
  /* MHD takes the buffer and free()s it with the response. */
  r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (r == NULL) {
    free(body);
    goto out;
  }
  /* The reply type covers answers (2xx) and refusals a client may retry
   * (5xx); anything else from the handler is its own text. */
  const char *type = code < 300 || code >= 500 ? s->reply_type : HTTP__TEXT;
  snprintf(num, sizeof(num), "%u", retry);
  if ((len > 0 && MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES) ||
      MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
      (retry > 0 && MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, num) != MHD_YES))
    goto out;
  rc = MHD_queue_response(c, (unsigned)code, r);
out:
  MHD_destroy_response(r);
  return rc;
}

/* MHD calls this once with the headers (*con_cls NULL), then with each piece
 * of body, then once more with *size 0 when the body is complete. A reply can
 * only be queued on the first or the last call. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *data, size_t *size, void **con_cls) {
  http_server *s = cls;
  http__conn *st = *con_cls;
  if (st == NULL) {
    /* Refusing here, before any body is read, makes MHD skip the body and
     * close the connection after the reply (and skip "100 Continue"). */
    int which = check_headers(s, c, url, method);
    if (which >= 0) return MHD_queue_response(c, canned_code[which], s->canned[which]);
    if ((st = calloc(1, sizeof(*st))) == NULL) return MHD_NO;
    kyso_buf_init(&st->body, s->max_body);
    *con_cls = st;
    return MHD_YES;
  }
  if (*size > 0) {
    st->seen = *size > SIZE_MAX - st->seen ? SIZE_MAX : st->seen + *size;
    if (!st->too_big && st->seen > s->max_body) {
      /* Chunked bodies carry no length: we learn the size only now. MHD
       * cannot answer mid-body, so drop what follows and answer 413 at the
       * end; but a peer still sending at twice max_body is cut off without
       * an answer, so it costs bounded time as well as memory. */
      st->too_big = 1;
      kyso_buf_free(&st->body, 0);
    }
    if (st->too_big) {
      if (st->seen / 2 > s->max_body) {
        kyso_log(KYSO_LOG_INFO, "http server on %s: closing a connection whose body passed "
                 "%zu bytes", s->listen, st->seen);
        return MHD_NO;
      }
    } else if (kyso_buf_append(&st->body, data, *size, "request body", NULL) != KYSO_OK) {
      return MHD_NO; /* out of memory */
    }
    *size = 0;
    return MHD_YES;
  }
  if (st->too_big) return MHD_queue_response(c, canned_code[R_413], s->canned[R_413]);
  if (st->body.len == 0) return MHD_queue_response(c, canned_code[R_400], s->canned[R_400]);
  return answer(s, c, url, st);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  http_server *s = cls;
  http__conn *st = *con_cls;
  if (st == NULL) return;
  if (st->counted) {
    pthread_mutex_lock(&s->mu);
    if (--s->busy == 0) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
  }
  kyso_buf_free(&st->body, 0);
  free(st);
  *con_cls = NULL;
}

/* One-line text replies telling the client what to send instead. Errors
 * close the connection: a client that got one is not speaking our protocol. */
static kyso_status make_canned(http_server *s, kyso_err *err) {
  char msg[R_COUNT][512];
  snprintf(msg[R_405], sizeof(msg[0]), "use POST, with a body of Content-Type: %s\n",
           s->content_type);
  snprintf(msg[R_404], sizeof(msg[0]), "no such path; POST to %s\n", s->paths[0]);
  snprintf(msg[R_415], sizeof(msg[0]), "send the body with Content-Type: %s\n",
           s->content_type);
  snprintf(msg[R_413], sizeof(msg[0]),
           "the request body is larger than %zu bytes; send a smaller %s body\n", s->max_body,
           s->content_type);
  snprintf(msg[R_400], sizeof(msg[0]), "the request body is empty; send a %s body\n",
           s->content_type);
  snprintf(msg[R_500], sizeof(msg[0]), "the server could not answer; try again later\n");
  for (int i = 0; i < R_COUNT; i++) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(msg[i]), msg[i], MHD_RESPMEM_MUST_COPY);
    s->canned[i] = r;
    if (r == NULL ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP__TEXT) != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES ||
        (i == R_405 && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "POST") != MHD_YES))
      return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "http server on '%s': out of memory",
                       s->listen);
  }
  return KYSO_OK;
}

static kyso_status copy_opts(http_server *s, const http_server_opts *o, kyso_err *err) {
  size_t n = 0;
  while (o->paths[n] != NULL) n++;
  s->listen = strdup(o->listen);
  s->content_type = strdup(o->content_type);
  s->reply_type = strdup(o->reply_type);
  s->paths = calloc(n + 1, sizeof(*s->paths));
  if (s->listen == NULL || s->content_type == NULL || s->reply_type == NULL || s->paths == NULL)
    goto oom;
  for (size_t i = 0; i < n; i++)
    if ((s->paths[i] = strdup(o->paths[i])) == NULL) goto oom;
  s->max_body = o->max_body;
  s->timeout_s = o->timeout_s ? o->timeout_s : HTTP__DEFAULT_TIMEOUT_S;
  s->handler = o->handler;
  s->arg = o->arg;
  return KYSO_OK;
oom:
  return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "http server on '%s': out of memory",
                   o->listen);
}

/* Reads the PEM files up front so a wrong path or a key that does not fit
 * the certificate is named, rather than MHD failing without a reason. */
static kyso_status load_tls(http_server *s, const http_server_opts *o, kyso_err *err) {
  kyso_status st = KYSO_OK;
  if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "http server on '%s': this libmicrohttpd was built without TLS; "
                     "install one with GnuTLS or leave the TLS files empty", s->listen);
  if ((st = kyso_pem_read(o->tls_cert, "HTTPS certificate", &s->cert, err)) == KYSO_OK &&
      (st = kyso_pem_read(o->tls_key, "HTTPS key", &s->key, err)) == KYSO_OK)
    st = kyso_pem_check_pair(&s->cert, &s->key, o->tls_cert, o->tls_key, err);
  if (st != KYSO_OK && err != NULL) {
    /* kyso_pem_read says NOT_FOUND for a missing file; to a caller starting
     * a server, any unusable TLS file is a bad argument. */
    err->code = KYSO_INVALID_ARGUMENT;
    kyso_err_wrap(err, "http server on '%s'", s->listen);
  }
  return st != KYSO_OK ? KYSO_INVALID_ARGUMENT : KYSO_OK;
}

/* Frees a server whose daemon is stopped or was never started. */
static void server_free(http_server *s) {
  if (s == NULL) return;
  for (int i = 0; i < R_COUNT; i++) MHD_destroy_response(s->canned[i]);
  for (char **p = s->paths; p != NULL && *p != NULL; p++) free(*p);
  free(s->paths);
  free(s->listen);
  free(s->content_type);
  free(s->reply_type);
  kyso_buf_free(&s->cert, 0);
  kyso_buf_free(&s->key, 1);
  if (s->sync_ready) {
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->mu);
  }
  free(s);
}

static kyso_status init_sync(http_server *s, kyso_err *err) {
  pthread_condattr_t ca;
  int rc = pthread_condattr_init(&ca);
  if (rc == 0) {
    /* Stop's bounded wait must not jump with the wall clock. */
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0 && (rc = pthread_cond_init(&s->idle, &ca)) == 0 &&
        (rc = pthread_mutex_init(&s->mu, NULL)) != 0)
      pthread_cond_destroy(&s->idle);
    pthread_condattr_destroy(&ca);
  }
  if (rc != 0)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "http server on '%s': %s", s->listen,
                     strerror(rc));
  s->sync_ready = 1;
  return KYSO_OK;
}

kyso_status http_server_start(const http_server_opts *o, http_server **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  http_server *s = NULL;
  struct sockaddr_storage addr;
  int v6 = 0;
  /* Options that are only sometimes given, passed as one MHD_OPTION_ARRAY. */
  struct MHD_OptionItem extra[4] = {{MHD_OPTION_END, 0, NULL}};
  size_t n_extra = 0;

  *out = NULL;
  if ((st = check_opts(o, err)) != KYSO_OK || (st = parse_listen(o->listen, &addr, &v6, err)) != KYSO_OK)
    goto out;
  if ((s = calloc(1, sizeof(*s))) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "http server on '%s': out of memory", o->listen);
    goto out;
  }
  kyso_buf_init(&s->cert, KYSO_MAX_PEM);
  kyso_buf_init(&s->key, KYSO_MAX_PEM);
  if ((st = copy_opts(s, o, err)) != KYSO_OK || (st = init_sync(s, err)) != KYSO_OK ||
      (st = make_canned(s, err)) != KYSO_OK)
    goto out;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                   MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
  if (o->tls_cert != NULL && o->tls_cert[0] != '\0') {
    if ((st = load_tls(s, o, err)) != KYSO_OK) goto out;
    flags |= MHD_USE_TLS;
    extra[n_extra++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert.data};
    extra[n_extra++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key.data};
  }
  unsigned threads = o->threads ? o->threads : HTTP__DEFAULT_THREADS;
  /* One thread is MHD's plain internal thread (a "pool" of one draws a warning). */
  if (threads > 1)
    extra[n_extra++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
  /* Poll, not epoll: MHD 0.9.75 can abort when quiescing an epoll thread
   * pool that just hit its connection limit; poll is woken by the ITC. */
  s->mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, s,
      MHD_OPTION_EXTERNAL_LOGGER, (MHD_LogCallback)on_mhd_log, s,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_CONNECTION_LIMIT,
      o->max_connections ? o->max_connections : HTTP__DEFAULT_CONNECTIONS,
      MHD_OPTION_CONNECTION_TIMEOUT, s->timeout_s,
      MHD_OPTION_NOTIFY_COMPLETED, (MHD_RequestCompletedCallback)on_completed, s,
      MHD_OPTION_STRICT_FOR_CLIENT, 1,
      MHD_OPTION_ARRAY, extra,
      MHD_OPTION_END);
  if (s->mhd == NULL) {
    st = kyso_fail(err, KYSO_UNAVAILABLE,
                   "cannot start the HTTP server on '%s' (%s); check that the address is "
                   "local and no other process listens on the port",
                   s->listen, s->last_log[0] ? s->last_log : "no reason given");
    goto out;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info != NULL ? info->port : 0;
  kyso_log(KYSO_LOG_INFO, "http server listening on %s (port %d%s)", s->listen, s->port,
           (flags & MHD_USE_TLS) ? ", HTTPS" : "");
out:
  if (st == KYSO_OK)
    *out = s;
  else
    server_free(s);
  return st;
}

int http_server_port(const http_server *s) { return s ? s->port : 0; }

/* Waits until no request is between its handler call and the end of its
 * reply, for at most the idle timeout. */
static void wait_idle(http_server *s) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += (time_t)s->timeout_s;
  pthread_mutex_lock(&s->mu);
  while (s->busy > 0)
    if (pthread_cond_timedwait(&s->idle, &s->mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&s->mu);
}

void http_server_stop(http_server *s) {
  if (s == NULL) return;
  /* Stop accepting first, so replies already being made can still go out;
   * MHD_stop_daemon would drop them. Idle connections are simply closed. */
  MHD_socket ls = MHD_quiesce_daemon(s->mhd);
  wait_idle(s);
  MHD_stop_daemon(s->mhd);
  if (ls != MHD_INVALID_SOCKET) close(ls);
  server_free(s);
}
