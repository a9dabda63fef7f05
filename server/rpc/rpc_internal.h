/* kyso — internals of the gRPC server layer (server/rpc/), shared by its files
 * and by tests/rpc. Nothing here is part of the public contract (kyso/rpc.h). */
#ifndef KYSO_SERVER_RPC_INTERNAL_H
#define KYSO_SERVER_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "kyso/rpc.h"
#include "kyso/util.h"

/* Requests kept armed per method and per completion queue. Each is re-armed
 * the moment it matches, so this bounds the burst the core hands over at
 * once, not the number of calls in flight. */
#define RPC__SLOTS_PER_METHOD 4
/* Calls allowed to wait for a worker when opts->max_queued_calls is 0: about a
 * second of work at the HSM's rate, beyond which callers should back off. */
#define RPC__DEFAULT_QUEUE 1024
/* Longest life of any call when the options do not say (rpc_server_opts). */
#define RPC__DEFAULT_MAX_CALL_MS (10 * 60 * 1000)
/* PEM files (certificate chains, keys, CA bundles): far larger is a wrong path. */
#define RPC__MAX_PEM (1024 * 1024)

/* Every tag handed to the core points at one of these; owner is the slot, the
 * call or the server, depending on kind. */
typedef enum {
  RPC__TAG_REQUEST,  /* a requested call arrived (owner: rpc__slot) */
  RPC__TAG_CLOSE,    /* RECV_CLOSE_ON_SERVER completed (owner: rpc_call) */
  RPC__TAG_FINISH,   /* the final status batch completed (owner: rpc_call) */
  RPC__TAG_IO,       /* a streaming read or write completed (owner: rpc_call) */
  RPC__TAG_SHUTDOWN  /* grpc_server_shutdown_and_notify completed (owner: server) */
} rpc__tag_kind;

typedef struct rpc__tag {
  rpc__tag_kind kind;
  void *owner;
} rpc__tag;

/* One completion queue and the thread that drains it. */
typedef struct rpc__cq {
  rpc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
} rpc__cq;

/* One armed grpc_server_request_(registered_)call; method NULL means the
 * catch-all request for methods nobody registered. Lives as long as the server. */
typedef struct rpc__slot {
  rpc__tag tag;
  rpc_server *srv;
  rpc__cq *cq;
  const rpc_method *method;
  void *registered;            /* grpc_server_register_method handle */
  grpc_call *call;
  gpr_timespec deadline;       /* registered calls */
  grpc_call_details details;   /* unregistered calls: method and deadline */
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
} rpc__slot;

typedef enum {
  RPC__RUNNING,
  RPC__DRAINING,    /* shutdown began: no new calls, in-flight ones finish */
  RPC__CANCELLING,  /* grace expired: remaining calls cancelled */
  RPC__STOPPED      /* the core reported shutdown complete */
} rpc__state;

typedef struct rpc__pool rpc__pool;

struct rpc_server {
  rpc_method *methods;         /* own copy of the table, strings included */
  size_t method_count;
  void *app;
  rpc_auth_hook auth;
  size_t max_message;
  unsigned max_queued;
  int64_t max_call_ms;
  grpc_server *server;
  rpc__cq *cqs;
  unsigned cq_count;
  rpc__slot *slots;
  size_t slot_count;
  rpc__pool *pool;
  rpc_peer_cache *peer_cache;  /* parsed client certificates; NULL when off */
  int port;
  int grpc_ready;              /* grpc_init() done, grpc_shutdown() owed */
  int started;                 /* grpc_server_start() done */
  rpc__tag shutdown_tag;
  atomic_int state;            /* rpc__state; written under mu */
  pthread_mutex_t mu;
  pthread_cond_t cond;         /* signalled on every state change */
};

/* The state of one call from arrival to the completion of its final batch. */
struct rpc_call {
  rpc__tag close_tag;
  rpc__tag finish_tag;
  rpc_server *srv;
  const rpc_method *method;    /* NULL: unregistered, answered UNIMPLEMENTED */
  char *path;                  /* the method path as the client sent it */
  grpc_call *call;
  gpr_timespec deadline;       /* GPR_CLOCK_MONOTONIC */
  grpc_byte_buffer *payload;   /* NULL when the client sent no message */
  kyso_buf req;
  rpc_peer peer;
  int cancelled;               /* written by the core on RECV_CLOSE_ON_SERVER */
  atomic_int closed;           /* the close tag came back cancelled */
  atomic_int refs;             /* dispatch/finish batch + close batch */
  atomic_int finished;         /* set (release) by rpc_call_finish, read (acquire)
                                * before the free: orders the worker's writes
                                * before the completion-queue thread's free in
                                * a way ThreadSanitizer can see (the core's own
                                * ordering happens inside uninstrumented gRPC) */
  grpc_byte_buffer *resp;
  grpc_slice status_msg;
  /* Streaming: one read or write at a time, waited for by the handler. */
  rpc__tag io_tag;
  sem_t io_done;               /* posted by the completion-queue thread */
  atomic_int io_ok;            /* the batch's success, valid after io_done;
                                * atomic because the next batch's completion
                                * writes it after the handler's last read, an
                                * ordering made inside gRPC that TSan cannot see */
  int md_sent;                 /* initial metadata went out with a write */
  int read_end;                /* the client half-closed */
};

/* rpc_workers.c: a bounded queue drained by a fixed set of threads. */
typedef void (*rpc__pool_fn)(void *item, void *ctx);
kyso_status rpc__pool_start(unsigned threads, unsigned cap, rpc__pool_fn fn,
                            void *ctx, rpc__pool **out, kyso_err *err);
/* 0 when queued, -1 when the queue holds cap items or the pool is stopping. */
int rpc__pool_submit(rpc__pool *p, void *item);
/* Runs what is still queued, joins the threads, frees the pool. NULL is fine. */
void rpc__pool_stop(rpc__pool *p);

/* rpc_call.c: per-call state. */
/* Moves the arrived call out of slot (which is then ready to re-arm) into a
 * new rpc_call; NULL when memory is short (the call is then refused). */
rpc_call *rpc__call_adopt(rpc__slot *slot);
/* Starts RECV_CLOSE_ON_SERVER and hands the call to a worker, or answers it
 * at once (UNIMPLEMENTED, RESOURCE_EXHAUSTED). Runs on a completion-queue
 * thread and never blocks. */
void rpc__call_dispatch(rpc_call *call);
void rpc__call_on_tag(rpc__tag *tag, int ok);
/* Worker entry: reads the request, loads the peer, asks the hook, runs the handler. */
void rpc__call_run(void *call, void *srv);
/* Copies a received message (NULL = empty) into out, at most max bytes. */
kyso_status rpc__read_payload(grpc_byte_buffer *bb, size_t max, kyso_buf *out,
                              kyso_err *err);

/* rpc_stream.c: streaming reads and writes from a handler. */
/* The completion-queue side of RPC__TAG_IO: records ok, wakes the handler. */
void rpc__stream_io_done(rpc_call *call, int ok);

/* rpc_tls.c: credentials and the peer's certificate. */
kyso_status rpc__server_creds(const rpc_server_opts *opts,
                              grpc_server_credentials **out, kyso_err *err);
/* Fills peer->cert (a reference the caller frees) and its SHA-256 when the
 * client sent a certificate, from cache when it holds the same PEM; leaves
 * them zero otherwise. cache may be NULL. */
void rpc__peer_load(rpc_peer_cache *cache, grpc_call *call, rpc_peer *peer);

/* rpc_peer_cache.c: the clocks an entry's life is measured on, replaceable
 * by tests before the cache is shared (NULL restores the real ones). */
typedef struct rpc__clock {
  int64_t (*mono_ms)(void *ctx); /* CLOCK_MONOTONIC, ms: the ttl */
  time_t (*wall)(void *ctx);     /* time(NULL): against notAfter */
  void *ctx;
} rpc__clock;
void rpc__peer_cache_set_clock(rpc_peer_cache *c, const rpc__clock *clock);
/* Live and expired-but-not-yet-dropped entries: never above the bound. */
size_t rpc__peer_cache_count(rpc_peer_cache *c);

/* rpc_server.c */
/* Blocks until the server reaches at least state (tests use it to act at a
 * known point of shutdown). */
void rpc__server_wait_state(rpc_server *srv, rpc__state state);

#endif
