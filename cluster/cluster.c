/* cluster — lifecycle, the loop thread, and the calls other threads make.
 * Everything libraft does runs on the loop thread; other threads only
 * queue work under mu and uv_async_send, and read c->info under mu. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cluster_internal.h"
#include "kyso/limits.h"
#include "kyso/log.h"

#define DEFAULT_ELECTION_MS 1000
#define DEFAULT_HEARTBEAT_MS 100
#define DEFAULT_MAX_BATCH 256
#define DEFAULT_MAX_QUEUED 4096
/* Between attempts to reach a peer: short, so a restarted peer is back in
 * well under a second. */
#define CONNECT_RETRY_MS 200
/* On the leader, a member not heard from within this many election
 * timeouts counts as unreachable (documents are copied to the others
 * first). libraft clears recent_recv at every election timeout, so one
 * timeout alone would flicker. */
#define REACHABLE_TIMEOUTS 2

/* Whether the leader heard from member id lately (loop thread). */
static int heard_lately(cluster *c, uint64_t id, int recent_recv) {
  uint64_t now = uv_now(&c->loop);
  size_t i, free_slot = CLUSTER_MAX_MEMBERS;
  for (i = 0; i < CLUSTER_MAX_MEMBERS && c->heard[i].id != id; i++)
    if (c->heard[i].id == 0 && free_slot == CLUSTER_MAX_MEMBERS) free_slot = i;
  if (i == CLUSTER_MAX_MEMBERS) {
    if (free_slot == CLUSTER_MAX_MEMBERS) return 1; /* cannot track: assume so */
    i = free_slot;
    c->heard[i].id = id;
    c->heard[i].ms = now; /* newly seen: give it the benefit of the doubt */
  }
  if (recent_recv) c->heard[i].ms = now;
  return now - c->heard[i].ms <= (uint64_t)REACHABLE_TIMEOUTS * c->election_ms;
}

const char *cluster_state_name(cluster_role_state s) {
  switch (s) {
    case CLUSTER_FOLLOWER: return "follower";
    case CLUSTER_CANDIDATE: return "candidate";
    case CLUSTER_LEADER: return "leader";
    default: return "unavailable";
  }
}

static void copy_addr(char *dst, const char *src) {
  snprintf(dst, CLUSTER_MAX_ADDRESS + 1, "%s", src ? src : "");
}

void cluster__wire_address(int tls, const char *raft, const char *rpc,
                           char out[CLUSTER__WIRE_ADDRESS]) {
  if (tls && rpc != NULL && rpc[0] != '\0')
    snprintf(out, CLUSTER__WIRE_ADDRESS, "%s/%s", raft, rpc);
  else
    snprintf(out, CLUSTER__WIRE_ADDRESS, "%s", raft);
}

void cluster__split_address(const char *wire, char raft[CLUSTER_MAX_ADDRESS + 1],
                            char rpc[CLUSTER_MAX_ADDRESS + 1]) {
  const char *slash = wire != NULL ? strchr(wire, '/') : NULL;
  size_t n = slash != NULL ? (size_t)(slash - wire) : (wire != NULL ? strlen(wire) : 0);
  if (n > CLUSTER_MAX_ADDRESS) n = CLUSTER_MAX_ADDRESS;
  memcpy(raft, wire != NULL ? wire : "", n);
  raft[n] = '\0';
  copy_addr(rpc, slash != NULL ? slash + 1 : "");
}

void cluster__refresh_info(cluster *c) {
  cluster_info in;
  memset(&in, 0, sizeof(in));
  struct raft *r = &c->raft;
  raft_id leader = 0;
  const char *leader_addr = NULL;
  in.id = c->id;
  if (!c->closing) {
    switch (raft_state(r)) {
      case RAFT_FOLLOWER: in.state = CLUSTER_FOLLOWER; break;
      case RAFT_CANDIDATE: in.state = CLUSTER_CANDIDATE; break;
      case RAFT_LEADER: in.state = CLUSTER_LEADER; break;
      default: in.state = CLUSTER_UNAVAILABLE; break;
    }
    raft_leader(r, &leader, &leader_addr);
    if (raft_state(r) != RAFT_LEADER) /* a later leadership starts afresh */
      memset(c->heard, 0, sizeof(c->heard));
    in.term = r->current_term;
    in.last_index = raft_last_index(r);
    in.commit_index = r->commit_index;
    in.applied_index = raft_last_applied(r);
    for (unsigned i = 0; i < r->configuration.n && i < CLUSTER_MAX_MEMBERS; i++) {
      in.members[i].id = r->configuration.servers[i].id;
      cluster__split_address(r->configuration.servers[i].address, in.members[i].raft_address,
                             in.members[i].rpc_address);
      for (size_t k = 0; k < c->member_count && in.members[i].rpc_address[0] == '\0'; k++)
        if (c->members[k].id == in.members[i].id)
          copy_addr(in.members[i].rpc_address, c->members[k].rpc);
      in.members[i].voter = r->configuration.servers[i].role == RAFT_VOTER;
      in.members[i].reachable = 1;
      if (raft_state(r) == RAFT_LEADER && r->configuration.servers[i].id != c->id &&
          r->leader_state.progress != NULL) {
        const struct raft_progress *pg = &r->leader_state.progress[i];
        in.members[i].reachable =
            heard_lately(c, r->configuration.servers[i].id, pg->recent_recv);
      }
      in.member_count++;
    }
  }
  in.leader_id = leader;
  cluster__split_address(leader_addr, in.leader_raft, in.leader_rpc);
  for (size_t i = 0; i < c->member_count && in.leader_rpc[0] == '\0'; i++)
    if (leader != 0 && c->members[i].id == leader) copy_addr(in.leader_rpc, c->members[i].rpc);
  in.snapshots_taken = c->snapshots_taken;
  in.snapshots_installed = c->snapshots_installed;
  pthread_mutex_lock(&c->mu);
  if (in.applied_index > c->info.applied_index) cluster__applied_signal_locked(c);
  c->info = in;
  pthread_mutex_unlock(&c->mu);
}

void cluster_get_info(cluster *c, cluster_info *out) {
  pthread_mutex_lock(&c->mu);
  *out = c->info;
  pthread_mutex_unlock(&c->mu);
}

static void on_tick(uv_timer_t *t) { cluster__refresh_info(t->data); }

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void on_raft_closed(struct raft *r) {
  cluster *c = r->data;
  raft_uv_close(&c->io);
  if (c->tls)
    cluster__tls_transport_free(&c->transport);
  else
    raft_uv_tcp_close(&c->transport);
  uv_close((uv_handle_t *)&c->tick, on_handle_closed);
  uv_close((uv_handle_t *)&c->delay, on_handle_closed);
  /* Under mu: no thread is inside uv_async_send, and none calls it after
   * (they see stopping). */
  pthread_mutex_lock(&c->mu);
  c->stopping = 1;
  cluster__applied_signal_locked(c);
  uv_close((uv_handle_t *)&c->wake, on_handle_closed);
  pthread_mutex_unlock(&c->mu);
}

/* Not from inside a raft callback: libraft 0.15 aborts on that. Only the
 * async wake-up and the failed-open path call it. */
static void begin_close(cluster *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_timer_stop(&c->tick);
  raft_close(&c->raft, on_raft_closed);
}

static void on_wake(uv_async_t *h) {
  cluster *c = h->data;
  pthread_mutex_lock(&c->mu);
  int stop = c->stopping;
  pthread_mutex_unlock(&c->mu);
  if (stop && !c->closing) {
    c->closing = 1; /* queued work is answered "shutting down" first */
    cluster__on_wake(h);
    c->closing = 0;
    begin_close(c);
    return;
  }
  cluster__on_wake(h);
}

static void *loop_main(void *arg) {
  cluster *c = arg;
  uv_run(&c->loop, UV_RUN_DEFAULT);
  return NULL;
}

static kyso_status raft_fail(kyso_err *err, cluster *c, int rv, const char *what) {
  return kyso_fail(err, rv == RAFT_NOMEM ? KYSO_RESOURCE_EXHAUSTED : KYSO_UNAVAILABLE,
                   "cluster node %" PRIu64 ": %s: %s (%s)", c->id, what, raft_strerror(rv),
                   raft_errmsg(&c->raft));
}

static kyso_status check_opts(const cluster_opts *o, const char **self, kyso_err *err) {
  *self = NULL;
  if (o->id == 0 || o->dir == NULL || o->dir[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a cluster node needs an id above 0 and a "
                                                 "directory");
  if (o->member_count == 0 || o->member_count > CLUSTER_MAX_MEMBERS)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a cluster lists 1..%d members, not %zu",
                     CLUSTER_MAX_MEMBERS, o->member_count);
  for (size_t i = 0; i < o->member_count; i++) {
    const cluster_member *m = &o->members[i];
    if (m->id == 0 || m->raft_address == NULL || m->raft_address[0] == '\0' ||
        strlen(m->raft_address) > CLUSTER_MAX_ADDRESS ||
        (m->rpc_address != NULL && strlen(m->rpc_address) > CLUSTER_MAX_ADDRESS))
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "cluster member %zu needs an id above 0 and addresses of 1..%d characters",
                       i + 1, CLUSTER_MAX_ADDRESS);
    for (size_t j = 0; j < i; j++)
      if (o->members[j].id == m->id)
        return kyso_fail(err, KYSO_INVALID_ARGUMENT, "cluster member id %" PRIu64 " is listed twice",
                         m->id);
    if (m->id == o->id) *self = m->raft_address;
  }
  if (*self == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "node %" PRIu64 " is not among the cluster's members: list it with its Raft "
                     "address",
                     o->id);
  return KYSO_OK;
}

static kyso_status bootstrap(cluster *c, const cluster_opts *o, kyso_err *err) {
  struct raft_configuration conf;
  kyso_status st = KYSO_OK;
  raft_configuration_init(&conf);
  for (size_t i = 0; i < o->member_count && st == KYSO_OK; i++) {
    char wire[CLUSTER__WIRE_ADDRESS];
    cluster__wire_address(o->tls != NULL, o->members[i].raft_address, o->members[i].rpc_address,
                          wire);
    int rv = raft_configuration_add(&conf, o->members[i].id, wire, RAFT_VOTER);
    if (rv != 0) st = raft_fail(err, c, rv, "building the initial configuration");
  }
  if (st == KYSO_OK) {
    int rv = raft_bootstrap(&c->raft, &conf);
    if (rv == 0)
      kyso_log(KYSO_LOG_INFO, "cluster: node %" PRIu64 " bootstrapped with %zu voters", c->id,
               o->member_count);
    else if (rv != RAFT_CANTBOOTSTRAP) /* state on disk already: it is loaded instead */
      st = raft_fail(err, c, rv, "bootstrapping");
  }
  raft_configuration_close(&conf);
  return st;
}

kyso_status cluster_open(const cluster_opts *o, cluster **out, kyso_err *err) {
  const char *self = NULL;
  int rv, raft_inited = 0, loop_inited = 0;
  *out = NULL;
  kyso_status st = check_opts(o, &self, err);
  if (st != KYSO_OK) return st;
  if (o->archive == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a cluster node needs an archive to apply to");
  cluster *c = calloc(1, sizeof(*c));
  if (c == NULL || (c->dir = strdup(o->dir)) == NULL) {
    free(c);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening the cluster");
  }
  pthread_mutex_init(&c->mu, NULL);
  c->id = o->id;
  c->archive = o->archive;
  if ((st = cluster__applied_init(c, err)) != KYSO_OK) goto fail;
  c->max_batch = o->max_batch ? o->max_batch : DEFAULT_MAX_BATCH;
  c->max_queued = o->max_queued ? o->max_queued : DEFAULT_MAX_QUEUED;
  c->applied = o->applied;
  c->applied_ctx = o->applied_ctx;
  c->checkpoint_needed = o->checkpoint_needed;
  c->checkpoint_ctx = o->checkpoint_ctx;
  c->member_count = o->member_count;
  for (size_t i = 0; i < o->member_count; i++) {
    c->members[i].id = o->members[i].id;
    copy_addr(c->members[i].raft, o->members[i].raft_address);
    copy_addr(c->members[i].rpc, o->members[i].rpc_address);
  }
  if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create the Raft directory '%s': %s",
                   c->dir, strerror(errno));
    goto fail;
  }
  if (uv_loop_init(&c->loop) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot start the cluster's event loop");
    goto fail;
  }
  loop_inited = 1;
  uv_async_init(&c->loop, &c->wake, on_wake);
  c->wake.data = c;
  uv_timer_init(&c->loop, &c->tick);
  c->tick.data = c;
  uv_timer_init(&c->loop, &c->delay);
  c->delay.data = c;
  c->test_delay_ms = o->test_propose_delay_ms;
  if (o->tls != NULL) {
    if ((st = cluster__tls_transport_init(&c->transport, &c->loop, o->tls, err)) != KYSO_OK)
      goto fail;
    c->tls = 1;
    rv = 0;
  } else {
    rv = raft_uv_tcp_init(&c->transport, &c->loop);
  }
  if (rv != 0 || (rv = raft_uv_init(&c->io, &c->loop, c->dir, &c->transport)) != 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "cannot open the Raft log in '%s': %s (it needs a file system with O_DIRECT "
                   "and kernel AIO, such as ext4 or tmpfs)",
                   c->dir, raft_strerror(rv));
    goto fail;
  }
  raft_uv_set_connect_retry_delay(&c->io, CONNECT_RETRY_MS);
  cluster__fsm_init(c);
  char self_wire[CLUSTER__WIRE_ADDRESS];
  for (size_t i = 0; i < o->member_count; i++)
    if (o->members[i].id == o->id)
      cluster__wire_address(o->tls != NULL, self, o->members[i].rpc_address, self_wire);
  if ((rv = raft_init(&c->raft, &c->io, &c->fsm, c->id, self_wire)) != 0) {
    st = raft_fail(err, c, rv, "initialising Raft");
    goto fail;
  }
  raft_inited = 1;
  c->raft.data = c;
  unsigned hb = o->heartbeat_ms ? o->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
  c->election_ms = o->election_ms ? o->election_ms : DEFAULT_ELECTION_MS;
  raft_set_election_timeout(&c->raft, c->election_ms);
  raft_set_heartbeat_timeout(&c->raft, hb);
  if (o->snapshot_threshold) raft_set_snapshot_threshold(&c->raft, o->snapshot_threshold);
  if (o->snapshot_trailing) raft_set_snapshot_trailing(&c->raft, o->snapshot_trailing);
  raft_set_pre_vote(&c->raft, true); /* a node back from a partition does not depose the leader */
  if (!o->join && (st = bootstrap(c, o, err)) != KYSO_OK) goto fail;
  if ((rv = raft_start(&c->raft)) != 0) {
    st = raft_fail(err, c, rv, "starting Raft (loading its log)");
    goto fail;
  }
  uv_timer_start(&c->tick, on_tick, hb, hb);
  cluster__refresh_info(c);
  if (pthread_create(&c->thread, NULL, loop_main, c) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot start the cluster's loop thread");
    goto fail;
  }
  c->thread_started = 1;
  kyso_log(KYSO_LOG_INFO, "cluster: node %" PRIu64 " raft on %s, %zu members configured", c->id,
           self, c->member_count);
  *out = c;
  return KYSO_OK;
fail:
  if (raft_inited) {
    begin_close(c);
  } else if (loop_inited) {
    uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    uv_close((uv_handle_t *)&c->delay, on_handle_closed);
    uv_close((uv_handle_t *)&c->wake, on_handle_closed);
    if (c->tls) cluster__tls_transport_free(&c->transport);
  }
  if (loop_inited) {
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
  }
  cluster__applied_destroy(c);
  pthread_mutex_destroy(&c->mu);
  free(c->dir);
  free(c);
  return st;
}

void cluster_close(cluster *c) {
  if (c == NULL) return;
  pthread_mutex_lock(&c->mu);
  if (!c->stopping) uv_async_send(&c->wake);
  c->stopping = 1;
  cluster__applied_signal_locked(c);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thread, NULL);
  if (uv_loop_close(&c->loop) != 0)
    kyso_log(KYSO_LOG_WARN, "cluster: node %" PRIu64 " closed its loop with handles open", c->id);
  cluster__applied_destroy(c);
  pthread_mutex_destroy(&c->mu);
  free(c->dir);
  free(c);
}

static void enqueue(cluster *c, cluster__item *it) {
  const char *refusal = NULL;
  char msg[160];
  pthread_mutex_lock(&c->mu);
  if (c->stopping) {
    refusal = "is shutting down: call another node";
  } else if (c->queued >= c->max_queued) {
    refusal = "has too many writes queued: retry with back-off";
  } else {
    if (c->tail != NULL)
      c->tail->next = it;
    else
      c->head = it;
    c->tail = it;
    c->queued++;
    uv_async_send(&c->wake); /* under mu: the loop closes the handle under mu */
  }
  int stopping = c->stopping;
  pthread_mutex_unlock(&c->mu);
  if (refusal == NULL) return;
  snprintf(msg, sizeof(msg), "cluster node %" PRIu64 " %s", c->id, refusal);
  cluster__finish(it, stopping ? KYSO_UNAVAILABLE : KYSO_RESOURCE_EXHAUSTED, msg, NULL, 0);
}

static cluster__item *new_item(const uint8_t *cmd, size_t len, cluster_done_fn done, void *ctx) {
  cluster__item *it = calloc(1, sizeof(*it));
  if (it == NULL) return NULL;
  if (cmd != NULL) {
    if ((it->cmd = malloc(len ? len : 1)) == NULL) {
      free(it);
      return NULL;
    }
    memcpy(it->cmd, cmd, len);
  }
  it->len = len;
  it->done = done;
  it->ctx = ctx;
  return it;
}

void cluster_submit(cluster *c, const uint8_t *cmd, size_t len, cluster_done_fn done, void *ctx) {
  if (cmd == NULL || len == 0 || len > KYSO_MAX_MESSAGE) {
    done(ctx, KYSO_INVALID_ARGUMENT, "a command is 1..KYSO_MAX_MESSAGE bytes", NULL, 0);
    return;
  }
  cluster__item *it = new_item(cmd, len, done, ctx);
  if (it == NULL) {
    done(ctx, KYSO_RESOURCE_EXHAUSTED, "out of memory queueing a command", NULL, 0);
    return;
  }
  enqueue(c, it);
}

/* A blocking caller's side of a submission; freed by whichever of the
 * caller and the loop lets go last (the caller may time out first). */
typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs, done;
  kyso_status st;
  char msg[KYSO_ERR_MSG_MAX];
  uint8_t *result;
  size_t result_len;
} waiter;

static void waiter_release(waiter *w) {
  pthread_mutex_lock(&w->mu);
  int last = --w->refs == 0;
  pthread_mutex_unlock(&w->mu);
  if (!last) return;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w->result);
  free(w);
}

static void waiter_done(void *ctx, kyso_status st, const char *msg, const uint8_t *result,
                        size_t len) {
  waiter *w = ctx;
  pthread_mutex_lock(&w->mu);
  w->st = st;
  snprintf(w->msg, sizeof(w->msg), "%s", msg);
  if (st == KYSO_OK && result != NULL && (w->result = malloc(len ? len : 1)) != NULL) {
    memcpy(w->result, result, len);
    w->result_len = len;
  } else if (st == KYSO_OK && result != NULL) {
    w->st = KYSO_RESOURCE_EXHAUSTED;
    snprintf(w->msg, sizeof(w->msg), "out of memory copying a command's result");
  }
  w->done = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  waiter_release(w);
}

static waiter *waiter_new(void) {
  waiter *w = calloc(1, sizeof(*w));
  if (w == NULL) return NULL;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&w->mu, NULL);
  w->refs = 2;
  return w;
}

static kyso_status waiter_wait(waiter *w, int64_t timeout_ms, uint8_t **result,
                               size_t *result_len, kyso_err *err) {
  struct timespec until;
  cluster__deadline(timeout_ms, &until);
  if (timeout_ms < 0) timeout_ms = 0;
  kyso_status st;
  pthread_mutex_lock(&w->mu);
  while (!w->done)
    if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT) break;
  if (!w->done) {
    st = kyso_fail(err, KYSO_DEADLINE_EXCEEDED,
                   "no commit within %lld ms; whether it was recorded is unknown: retry with the "
                   "same request_id",
                   (long long)timeout_ms);
  } else if ((st = w->st) != KYSO_OK) {
    kyso_fail(err, st, "%s", w->msg);
  } else if (result != NULL) {
    *result = w->result;
    *result_len = w->result_len;
    w->result = NULL;
  }
  pthread_mutex_unlock(&w->mu);
  waiter_release(w);
  return st;
}

kyso_status cluster_submit_wait(cluster *c, const uint8_t *cmd, size_t len, int64_t timeout_ms,
                                uint8_t **result, size_t *result_len, kyso_err *err) {
  *result = NULL;
  *result_len = 0;
  waiter *w = waiter_new();
  if (w == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a commit");
  cluster_submit(c, cmd, len, waiter_done, w);
  return waiter_wait(w, timeout_ms, result, result_len, err);
}

/* An item without a command whose answer a blocking caller waits for. */
static cluster__item *waiting_item(waiter **w) {
  cluster__item *it = (*w = waiter_new()) != NULL ? new_item(NULL, 0, waiter_done, *w) : NULL;
  if (it == NULL && *w != NULL) {
    (*w)->refs = 1;
    waiter_release(*w);
  }
  return it;
}

kyso_status cluster_barrier_wait(cluster *c, int64_t timeout_ms, kyso_err *err) {
  waiter *w = NULL;
  cluster__item *it = waiting_item(&w);
  if (it == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a read barrier");
  it->barrier = 1;
  enqueue(c, it);
  return waiter_wait(w, timeout_ms, NULL, NULL, err);
}

static void nudge_done(void *ctx, kyso_status st, const char *msg, const uint8_t *result,
                       size_t len) {
  (void)ctx, (void)st, (void)msg, (void)result, (void)len; /* nobody waits for it */
}

void cluster_nudge(cluster *c) {
  cluster__item *it = new_item(NULL, 0, nudge_done, NULL);
  if (it == NULL) return; /* the next heartbeat tells them */
  it->barrier = 1;
  enqueue(c, it);
}

kyso_status cluster_change_wait(cluster *c, cluster_change_op op, uint64_t id,
                                const char *raft_address, const char *rpc_address,
                                int64_t timeout_ms, kyso_err *err) {
  if (op < CLUSTER_CHANGE_ADD || op > CLUSTER_CHANGE_TRANSFER)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "unknown membership change %d", (int)op);
  if (op != CLUSTER_CHANGE_TRANSFER && id == 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a membership change names a node id above 0");
  if (op == CLUSTER_CHANGE_ADD &&
      (raft_address == NULL || strchr(raft_address, ':') == NULL ||
       strchr(raft_address, '/') != NULL || strlen(raft_address) > CLUSTER_MAX_ADDRESS ||
       (rpc_address != NULL && (strchr(rpc_address, '/') != NULL ||
                                strlen(rpc_address) > CLUSTER_MAX_ADDRESS))))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "a node is added with its Raft address HOST:PORT (and its client address)");
  waiter *w = NULL;
  cluster__item *it = waiting_item(&w);
  if (it == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a membership change");
  it->change = op;
  it->change_id = id;
  if (op == CLUSTER_CHANGE_ADD)
    cluster__wire_address(c->tls, raft_address, rpc_address, it->change_address);
  enqueue(c, it);
  return waiter_wait(w, timeout_ms, NULL, NULL, err);
}

static void on_recover_closed(struct raft *r) { (void)r; }

kyso_status cluster_recover(const char *dir, uint64_t id, const cluster_member *members,
                            size_t member_count, int with_rpc, kyso_err *err) {
  uv_loop_t loop;
  struct raft_uv_transport transport;
  struct raft_io io;
  struct raft_fsm fsm;
  struct raft raft;
  struct raft_configuration conf;
  const char *self = NULL;
  kyso_status st = KYSO_OK;
  int rv;
  cluster_opts o = {.id = id, .dir = dir, .members = members, .member_count = member_count};
  if ((st = check_opts(&o, &self, err)) != KYSO_OK) return st;
  memset(&fsm, 0, sizeof(fsm));
  fsm.version = 1;
  if (uv_loop_init(&loop) != 0) return kyso_fail(err, KYSO_INTERNAL, "cannot start an event loop");
  raft_uv_tcp_init(&transport, &loop);
  if ((rv = raft_uv_init(&io, &loop, dir, &transport)) != 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot open the Raft log in '%s': %s", dir,
                   raft_strerror(rv));
    raft_uv_tcp_close(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return st;
  }
  char wire[CLUSTER__WIRE_ADDRESS];
  cluster__wire_address(with_rpc, self, NULL, wire);
  for (size_t i = 0; i < member_count; i++)
    if (members[i].id == id) cluster__wire_address(with_rpc, self, members[i].rpc_address, wire);
  raft_init(&raft, &io, &fsm, id, wire);
  raft_configuration_init(&conf);
  for (size_t i = 0; i < member_count && st == KYSO_OK; i++) {
    char w[CLUSTER__WIRE_ADDRESS];
    cluster__wire_address(with_rpc, members[i].raft_address, members[i].rpc_address, w);
    if (raft_configuration_add(&conf, members[i].id, w, RAFT_VOTER) != 0)
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory building the configuration");
  }
  if (st == KYSO_OK && (rv = raft_recover(&raft, &conf)) != 0)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "libraft refused the recovery in '%s': %s (%s)", dir, raft_strerror(rv),
                   raft_errmsg(&raft));
  raft_configuration_close(&conf);
  raft_close(&raft, on_recover_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  raft_uv_close(&io);
  raft_uv_tcp_close(&transport);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (st == KYSO_OK)
    kyso_log(KYSO_LOG_WARN,
             "cluster: node %" PRIu64 " recovered with %zu member(s): copy its data directory "
             "to the other survivors before starting them",
             id, member_count);
  return st;
}
