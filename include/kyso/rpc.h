/* kyso — a small, general gRPC C core server: a method table, completion-
 * queue threads that never run slow work, a worker pool that does, TLS with
 * optional client certificates, an authorisation hook consulted on every call,
 * and graceful shutdown. Knows nothing about kyso's messages. */
#ifndef KYSO_RPC_H
#define KYSO_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "kyso/status.h"

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

/* Runs on a worker thread with the whole request message. Must end the call
 * exactly once with rpc_call_finish (possibly later, from another thread). */
typedef void (*rpc_handler)(rpc_call *call, void *app);

/* How messages flow. Unary and server-streaming handlers get the one request
 * message through rpc_call_request; client-streaming handlers read every
 * request message with rpc_call_read. Server-streaming handlers send with
 * rpc_call_write, then end with rpc_call_finish(call, code, msg, NULL, 0). */
typedef enum {
  RPC_UNARY = 0,
  RPC_CLIENT_STREAMING = 1,
  RPC_SERVER_STREAMING = 2,
} rpc_kind;

typedef struct rpc_method {
  const char *path;      /* "/kyso.v1.Signer/Sign" */
  const char *operation; /* name given to the authorisation hook, e.g. "sign" */
  rpc_handler handler;
  rpc_kind kind;         /* RPC_UNARY when left zero */
} rpc_method;

/* Who is calling, as established by TLS and the auth hook. */
typedef struct rpc_peer {
  X509 *cert;            /* client certificate (NULL without one); the call holds
                            a reference: X509_up_ref it to keep it longer */
  uint8_t cert_sha256[32];
  char principal[128];   /* set by the auth hook: the account or service name */
  char role[32];         /* set by the auth hook */
} rpc_peer;

/* Called once per call, before the handler, on a worker thread. Returns OK to
 * let the call through, or UNAUTHENTICATED / PERMISSION_DENIED with a reason
 * (which is sent to the client). May fill peer->principal and peer->role. */
typedef kyso_status (*rpc_auth_hook)(void *app, rpc_peer *peer,
                                     const char *operation, kyso_err *err);

typedef struct rpc_server_opts {
  const char *listen_addr;     /* "127.0.0.1:7443" */
  /* TLS: all three PEM file paths; tls_cert_file NULL means plaintext
   * (only allowed when allow_insecure is set — tests of the layer itself). */
  const char *tls_cert_file;
  const char *tls_key_file;
  const char *client_ca_file;  /* non-NULL: request client certs (the hook verifies) */
  int allow_insecure;
  unsigned cq_threads;         /* completion-queue threads, default 1 */
  unsigned worker_threads;     /* handler threads, default 2 x cores */
  size_t max_message;          /* bytes, default KYSO_MAX_MESSAGE */
  unsigned max_queued_calls;   /* calls waiting for a worker before RESOURCE_EXHAUSTED */
  int64_t max_call_ms;         /* cap on any call's life, deadline or not (a client
                                  without one cannot hold a worker forever);
                                  0 = 10 minutes */
  unsigned peer_cache_seconds; /* with client_ca_file: remember a parsed client
                                  certificate this long (0 = parse it on every call) */
  rpc_auth_hook auth;          /* required */
} rpc_server_opts;

/* Server */
/* Binds, registers every method, starts the threads. */
kyso_status rpc_server_start(const rpc_server_opts *opts,
                             const rpc_method *methods, size_t method_count,
                             void *app, rpc_server **out,
                             kyso_err *err) KYSO_MUST_CHECK;
/* The port actually bound (useful with ":0"). */
int rpc_server_port(const rpc_server *srv);
/* Stops accepting calls, lets in-flight calls finish (up to grace_ms), then
 * cancels the rest, joins every thread and frees the server. NULL is fine. */
void rpc_server_shutdown(rpc_server *srv, int grace_ms);

/* Inside a handler */
const uint8_t *rpc_call_request(const rpc_call *call, size_t *len);
const rpc_peer *rpc_call_peer(const rpc_call *call);
const char *rpc_call_method(const rpc_call *call);
/* Milliseconds left before the call's deadline: the client's, capped at
 * max_call_ms after the call arrived (so never infinite); <= 0 once passed.
 * Handlers check it before any irreversible step. */
int64_t rpc_call_remaining_ms(const rpc_call *call);
/* Sends the response (when code == OK) and the status with msg; frees the
 * call. resp is copied. Safe from any thread. */
void rpc_call_finish(rpc_call *call, kyso_status code, const char *msg,
                     const uint8_t *resp, size_t resp_len);

/* Streaming, from the handler's (worker) thread; each blocks that thread
 * only, never a completion-queue thread, and holds one message at a time. */
/* Next request message of a client-streaming call. *data is valid until the
 * next rpc_call_read or rpc_call_finish; *end = 1 (and *len = 0) once the
 * client half-closed. CANCELLED when the client went away,
 * DEADLINE_EXCEEDED past the deadline, RESOURCE_EXHAUSTED over max_message. */
kyso_status rpc_call_read(rpc_call *call, const uint8_t **data, size_t *len, int *end,
                          kyso_err *err) KYSO_MUST_CHECK;
/* Sends one response message of a server-streaming call and waits until
 * gRPC has taken it (flow control keeps memory bounded). data is copied.
 * CANCELLED / DEADLINE_EXCEEDED when the client is gone. */
kyso_status rpc_call_write(rpc_call *call, const uint8_t *data, size_t len,
                           kyso_err *err) KYSO_MUST_CHECK;

/* Peer cache: what was learnt about a client certificate (parsed, verified),
 * remembered under a 32-byte fingerprint for at most ttl seconds and never
 * at or past a notAfter. Bounded (the oldest unused entry goes first), safe
 * from any thread. A NULL cache is "off": every lookup misses. */
typedef struct rpc_peer_cache rpc_peer_cache;
/* Distinct client certificates remembered: far more than the callers a node
 * has; full, it holds that many parsed certificates (a few MiB). */
#define RPC_PEER_CACHE_ENTRIES 1024
/* ttl_seconds 0 sets *out to NULL (off) and succeeds. */
kyso_status rpc_peer_cache_new(unsigned entries, unsigned ttl_seconds, rpc_peer_cache **out,
                               kyso_err *err) KYSO_MUST_CHECK;
void rpc_peer_cache_free(rpc_peer_cache *c);
/* 1 if key is live: then *cert (when cert is non-NULL) is a new reference for
 * the caller to X509_free, and sha256 (when non-NULL) is filled. 0 otherwise;
 * an entry stored without a certificate misses when cert is asked for. */
int rpc_peer_cache_get(rpc_peer_cache *c, const uint8_t key[32], X509 **cert,
                       uint8_t sha256[32]);
/* Remembers cert (up-ref'd; may be NULL) and sha256 (may be NULL) under key
 * until now + ttl or not_after, whichever comes first; replaces what key
 * held. Nothing is stored without a not_after or once it has passed. */
void rpc_peer_cache_put(rpc_peer_cache *c, const uint8_t key[32], X509 *cert,
                        const uint8_t sha256[32], const ASN1_TIME *not_after);
/* Forgets everything: for when trust changes (a new CA bundle, a CRL). */
void rpc_peer_cache_clear(rpc_peer_cache *c);

#endif
