/* kyso — HTTP for RFC 3161 (section 3.4): a small server answering POSTs of
 * one content type (libmicrohttpd), and a client POSTing to another TSA
 * (libcurl). Both cap sizes and time, so a slow or hostile peer costs a
 * bounded amount of memory and time. */
#ifndef KYSO_HTTP_H
#define KYSO_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

/* Server */
typedef struct http_server http_server;

/* Called on a server thread for each complete, well-formed request (POST,
 * the right content type, body within max_body). Sets *code (200, 503 ...),
 * *body (malloc()ed, freed by the server; may be NULL with *body_len 0) and
 * *retry_after_s (> 0 adds a Retry-After header). Must be thread-safe. */
typedef void (*http_handler)(void *arg, const char *path, const uint8_t *req, size_t req_len,
                             int *code, uint8_t **body, size_t *body_len,
                             unsigned *retry_after_s);

typedef struct http_server_opts {
  const char *listen;       /* "HOST:PORT" (IPv4, or [IPv6]); port 0 picks a free one */
  const char *tls_cert;     /* PEM files for HTTPS; both NULL/"" for plain HTTP */
  const char *tls_key;
  const char *const *paths; /* accepted paths (NULL-terminated); others 404 */
  const char *content_type; /* required request type, e.g. "application/timestamp-query" */
  const char *reply_type;   /* type of every 2xx/5xx body, e.g. "application/timestamp-reply" */
  size_t max_body;          /* larger bodies: 413, read no further */
  unsigned threads;         /* 0: 2 */
  unsigned max_connections; /* 0: 64 */
  unsigned timeout_s;       /* idle connection timeout; 0: 10 */
  http_handler handler;
  void *arg;
} http_server_opts;

/* Starts listening. Everything but a good request is answered by the
 * server itself, with a one-line text/plain body saying what to do: 405
 * (with Allow: POST) for other methods, 404 for other paths, 415 for a
 * missing or other Content-Type (parameters after ';' are ignored), 413
 * over max_body (by Content-Length before reading, or while reading), 400
 * for an empty body. UNAVAILABLE if the address cannot be bound,
 * INVALID_ARGUMENT for a bad listen string or unreadable TLS files. */
kyso_status http_server_start(const http_server_opts *opts, http_server **out,
                              kyso_err *err) KYSO_MUST_CHECK;
/* The bound port (useful with port 0). */
int http_server_port(const http_server *s);
/* Stops accepting, finishes in-flight requests, frees. NULL is fine. */
void http_server_stop(http_server *s);

/* Client */
typedef struct http_post_opts {
  const char *url;          /* http:// or https:// only */
  const char *content_type; /* of the request */
  const char *accept_type;  /* required type of the reply (200 only) */
  const char *ca_file;      /* PEM trust anchors for https; NULL: the system's */
  unsigned timeout_ms;      /* whole exchange, connect included; 0: 10000 */
  size_t max_reply;         /* larger replies fail; 0: 1 MiB */
} http_post_opts;

/* POSTs body and returns the reply body (malloc()ed). UNAVAILABLE naming
 * the URL when it cannot connect, times out, or answers 5xx (with the
 * status); FAILED_PRECONDITION for another non-200 status, a wrong reply
 * type or an oversized reply; INVALID_ARGUMENT for a bad URL or scheme. */
kyso_status http_post(const http_post_opts *opts, const uint8_t *body, size_t body_len,
                      uint8_t **reply, size_t *reply_len, kyso_err *err) KYSO_MUST_CHECK;

#endif
