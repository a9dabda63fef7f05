/* kyso — the server's lifecycle: method registration, completion-queue
 * threads, the armed requests, and graceful shutdown. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "rpc_internal.h"

static void set_state(rpc_server *srv, rpc__state st) {
  pthread_mutex_lock(&srv->mu);
  if (atomic_load(&srv->state) < (int)st) atomic_store(&srv->state, (int)st);
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->mu);
}

void rpc__server_wait_state(rpc_server *srv, rpc__state st) {
  pthread_mutex_lock(&srv->mu);
  while (atomic_load(&srv->state) < (int)st) pthread_cond_wait(&srv->cond, &srv->mu);
  pthread_mutex_unlock(&srv->mu);
}

/* Asks the core for the next call to the slot's method (or to any method
 * nobody registered). Once shutdown has begun, slots stay idle. */
static grpc_call_error slot_arm(rpc__slot *s) {
  rpc_server *srv = s->srv;
  grpc_call_error rc = GRPC_CALL_OK;
  if (atomic_load(&srv->state) != RPC__RUNNING) return rc;
  if (s->method != NULL)
    /* A client-streaming method reads its messages itself: no payload here. */
    rc = grpc_server_request_registered_call(
        srv->server, s->registered, &s->call, &s->deadline, &s->md,
        s->method->kind == RPC_CLIENT_STREAMING ? NULL : &s->payload, s->cq->cq, s->cq->cq,
        &s->tag);
  else
    rc = grpc_server_request_call(srv->server, &s->call, &s->details, &s->md,
                                  s->cq->cq, s->cq->cq, &s->tag);
  if (rc != GRPC_CALL_OK)
    kyso_log(KYSO_LOG_ERROR, "rpc: cannot request calls for '%s': %s",
             s->method ? s->method->path : "(unregistered)", grpc_call_error_to_string(rc));
  return rc;
}

/* A completion-queue thread: only bookkeeping and non-blocking batches here;
 * everything slow happens on the worker pool. */
static void *cq_main(void *arg) {
  rpc__cq *q = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    rpc__tag *t = ev.tag;
    if (t->kind == RPC__TAG_REQUEST) {
      if (!ev.success) continue; /* the server is shutting down */
      /* The adopted call keeps its channel (and so the server) alive while
       * the slot is re-armed; only then may it be answered and freed. */
      rpc_call *c = rpc__call_adopt(t->owner);
      slot_arm(t->owner);
      if (c != NULL) rpc__call_dispatch(c);
    } else if (t->kind == RPC__TAG_SHUTDOWN) {
      set_state(q->srv, RPC__STOPPED);
    } else {
      rpc__call_on_tag(t, ev.success);
    }
  }
  return NULL;
}

/* gRPC silently takes "host:99999" modulo 65536; refuse a port that is not
 * a decimal number up to 65535 (unix: addresses have none). */
static int port_ok(const char *addr) {
  const char *colon = strrchr(addr, ':');
  if (strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0) return 1;
  if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) > 5) return 0;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  return atol(colon + 1) <= 65535;
}

static kyso_status check_opts(const rpc_server_opts *o, const rpc_method *m,
                              size_t count, kyso_err *err) {
  if (o == NULL || o->listen_addr == NULL || o->listen_addr[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "rpc server: listen_addr is required");
  if (!port_ok(o->listen_addr))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "rpc server: listen address '%s' needs a port from 0 to 65535",
                     o->listen_addr);
  if (o->auth == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "rpc server on '%s': an auth hook is required", o->listen_addr);
  if (o->cq_threads > KYSO_MAX_THREADS || o->worker_threads > KYSO_MAX_THREADS)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "rpc server on '%s': %u completion-queue and %u worker threads "
                     "(at most %d each)", o->listen_addr, o->cq_threads,
                     o->worker_threads, KYSO_MAX_THREADS);
  if (o->max_message > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "rpc server: max_message %zu is above %d",
                     o->max_message, INT_MAX);
  if (count > 0 && m == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "rpc server: %zu methods but no table", count);
  for (size_t i = 0; i < count; i++) {
    if (m[i].path == NULL || m[i].path[0] != '/' || m[i].operation == NULL ||
        m[i].handler == NULL || (unsigned)m[i].kind > RPC_SERVER_STREAMING)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "rpc server: method %zu ('%s') needs a '/'-rooted path, an "
                       "operation, a handler and a known kind", i,
                       m[i].path ? m[i].path : "(null)");
    for (size_t j = 0; j < i; j++)
      if (strcmp(m[i].path, m[j].path) == 0)
        return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                         "rpc server: method '%s' appears twice in the table", m[i].path);
  }
  return KYSO_OK;
}

static kyso_status copy_methods(rpc_server *srv, const rpc_method *m, size_t n,
                                kyso_err *err) {
  srv->methods = calloc(n ? n : 1, sizeof(*srv->methods));
  if (srv->methods == NULL) goto oom;
  for (; srv->method_count < n; srv->method_count++) {
    rpc_method *d = &srv->methods[srv->method_count];
    d->handler = m[srv->method_count].handler;
    d->kind = m[srv->method_count].kind;
    d->path = strdup(m[srv->method_count].path);
    d->operation = strdup(m[srv->method_count].operation);
    if (d->path == NULL || d->operation == NULL) goto oom;
  }
  return KYSO_OK;
oom:
  return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "rpc server: out of memory for the method table");
}

/* Creates the core server, registers methods and queues, lays out the slots. */
static kyso_status build_server(rpc_server *srv, const rpc_server_opts *o, kyso_err *err) {
  grpc_arg args[3];
  memset(args, 0, sizeof(args));
  args[0].type = args[1].type = args[2].type = GRPC_ARG_INTEGER;
  args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (int)srv->max_message;
  args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[1].value.integer = (int)srv->max_message;
  /* Two servers on one port would silently share it; the second must fail. */
  args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
  args[2].value.integer = 0;
  grpc_channel_args ca = {3, args};
  srv->server = grpc_server_create(&ca, NULL);
  srv->cq_count = o->cq_threads ? o->cq_threads : 1;
  srv->cqs = calloc(srv->cq_count, sizeof(*srv->cqs));
  size_t per_cq = (srv->method_count + 1) * RPC__SLOTS_PER_METHOD;
  srv->slots = calloc(per_cq * srv->cq_count, sizeof(*srv->slots));
  if (srv->server == NULL || srv->cqs == NULL || srv->slots == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "rpc server: out of memory");
  for (unsigned i = 0; i < srv->cq_count; i++) {
    srv->cqs[i].srv = srv;
    srv->cqs[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cqs[i].cq, NULL);
  }
  for (size_t m = 0; m <= srv->method_count; m++) {
    const rpc_method *method = m < srv->method_count ? &srv->methods[m] : NULL;
    void *reg = NULL;
    if (method != NULL &&
        (reg = grpc_server_register_method(srv->server, method->path, NULL,
                                           method->kind == RPC_CLIENT_STREAMING
                                               ? GRPC_SRM_PAYLOAD_NONE
                                               : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                           0)) == NULL)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "rpc server: gRPC refused method '%s'",
                       method->path);
    for (unsigned q = 0; q < srv->cq_count; q++)
      for (unsigned k = 0; k < RPC__SLOTS_PER_METHOD; k++) {
        rpc__slot *s = &srv->slots[srv->slot_count++];
        s->tag = (rpc__tag){RPC__TAG_REQUEST, s};
        s->srv = srv;
        s->cq = &srv->cqs[q];
        s->method = method;
        s->registered = reg;
        grpc_metadata_array_init(&s->md);
        grpc_call_details_init(&s->details);
      }
  }
  return KYSO_OK;
}

/* Frees a server that was never started, or whose shutdown has completed. */
static void server_free(rpc_server *srv) {
  rpc__pool_stop(srv->pool);
  rpc_peer_cache_free(srv->peer_cache);
  if (srv->server != NULL) grpc_server_destroy(srv->server);
  for (unsigned i = 0; srv->cqs != NULL && i < srv->cq_count; i++) {
    rpc__cq *q = &srv->cqs[i];
    if (q->cq == NULL) continue;
    grpc_completion_queue_shutdown(q->cq);
    if (q->started)
      pthread_join(q->thread, NULL);
    else
      while (grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
    grpc_completion_queue_destroy(q->cq);
  }
  for (size_t i = 0; i < srv->slot_count; i++) {
    grpc_metadata_array_destroy(&srv->slots[i].md);
    grpc_call_details_destroy(&srv->slots[i].details);
  }
  for (size_t i = 0; i < srv->method_count; i++) {
    free((void *)srv->methods[i].path);
    free((void *)srv->methods[i].operation);
  }
  free(srv->methods);
  free(srv->slots);
  free(srv->cqs);
  pthread_cond_destroy(&srv->cond);
  pthread_mutex_destroy(&srv->mu);
  if (srv->grpc_ready) grpc_shutdown();
  free(srv);
}

static unsigned default_workers(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  return n * 2 > KYSO_MAX_THREADS ? KYSO_MAX_THREADS : (unsigned)n * 2;
}

kyso_status rpc_server_start(const rpc_server_opts *o, const rpc_method *methods,
                             size_t method_count, void *app, rpc_server **out,
                             kyso_err *err) {
  kyso_status st = KYSO_OK;
  rpc_server *srv = NULL;
  grpc_server_credentials *creds = NULL;
  pthread_condattr_t ca;
  *out = NULL;
  if ((st = check_opts(o, methods, method_count, err)) != KYSO_OK) return st;
  if ((srv = calloc(1, sizeof(*srv))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "rpc server: out of memory");
  pthread_mutex_init(&srv->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&srv->cond, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&srv->state, RPC__RUNNING);
  srv->app = app;
  srv->auth = o->auth;
  srv->max_message = o->max_message ? o->max_message : KYSO_MAX_MESSAGE;
  srv->max_queued = o->max_queued_calls ? o->max_queued_calls : RPC__DEFAULT_QUEUE;
  srv->max_call_ms = o->max_call_ms > 0 ? o->max_call_ms : RPC__DEFAULT_MAX_CALL_MS;
  srv->shutdown_tag = (rpc__tag){RPC__TAG_SHUTDOWN, srv};
  grpc_init();
  srv->grpc_ready = 1;
  if ((st = copy_methods(srv, methods, method_count, err)) != KYSO_OK ||
      (st = rpc__server_creds(o, &creds, err)) != KYSO_OK ||
      (o->client_ca_file != NULL &&
       (st = rpc_peer_cache_new(RPC_PEER_CACHE_ENTRIES, o->peer_cache_seconds, &srv->peer_cache,
                                err)) != KYSO_OK) ||
      (st = build_server(srv, o, err)) != KYSO_OK ||
      (st = rpc__pool_start(o->worker_threads ? o->worker_threads : default_workers(),
                            srv->max_queued, rpc__call_run, srv, &srv->pool, err)) != KYSO_OK)
    goto out;
  for (unsigned i = 0; i < srv->cq_count; i++) {
    if (pthread_create(&srv->cqs[i].thread, NULL, cq_main, &srv->cqs[i]) != 0) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "rpc server: cannot start completion-queue thread %u", i + 1);
      goto out;
    }
    srv->cqs[i].started = 1;
  }
  if ((srv->port = grpc_server_add_http2_port(srv->server, o->listen_addr, creds)) == 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "cannot listen on '%s': address invalid, in use or not permitted",
                   o->listen_addr);
    goto out;
  }
  grpc_server_start(srv->server);
  srv->started = 1;
  for (size_t i = 0; i < srv->slot_count; i++)
    if (slot_arm(&srv->slots[i]) != GRPC_CALL_OK) {
      st = kyso_fail(err, KYSO_INTERNAL, "rpc server on '%s': gRPC refused to queue requests",
                     o->listen_addr);
      goto out;
    }
  *out = srv;
  srv = NULL;
out:
  if (creds != NULL) grpc_server_credentials_release(creds);
  if (srv != NULL && srv->started) rpc_server_shutdown(srv, 0);
  else if (srv != NULL) server_free(srv);
  return st;
}

int rpc_server_port(const rpc_server *srv) { return srv ? srv->port : 0; }

void rpc_server_shutdown(rpc_server *srv, int grace_ms) {
  struct timespec until;
  int drained;
  if (srv == NULL) return;
  /* DRAINING is announced only once the core refuses new calls. */
  grpc_server_shutdown_and_notify(srv->server, srv->cqs[0].cq, &srv->shutdown_tag);
  set_state(srv, RPC__DRAINING);
  clock_gettime(CLOCK_MONOTONIC, &until);
  if (grace_ms > 0) {
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&srv->mu);
  while (grace_ms > 0 && atomic_load(&srv->state) < RPC__STOPPED)
    if (pthread_cond_timedwait(&srv->cond, &srv->mu, &until) == ETIMEDOUT) break;
  drained = atomic_load(&srv->state) == RPC__STOPPED;
  pthread_mutex_unlock(&srv->mu);
  if (!drained) {
    /* Grace is over: cancel what is left. Handlers still running must
     * finish their calls (their answers are dropped) before the core lets go. */
    set_state(srv, RPC__CANCELLING);
    grpc_server_cancel_all_calls(srv->server);
    rpc__server_wait_state(srv, RPC__STOPPED);
  }
  server_free(srv);
}
