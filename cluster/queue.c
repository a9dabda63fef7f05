/* cluster — submissions, on the loop thread: the queue other threads fill
 * is taken whole at each wake-up; consecutive commands become one entry
 * (at most max_batch), so while one entry is being made durable the next
 * one gathers everything that arrived meanwhile. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_internal.h"
#include "kyso/log.h"

/* An entry stops taking commands past this many bytes. */
#define BATCH_BYTES (4u * 1024 * 1024)

void cluster__finish(cluster__item *it, kyso_status st, const char *msg, const uint8_t *result,
                     size_t len) {
  it->done(it->ctx, st, msg ? msg : "", result, len);
  free(it->cmd);
  free(it);
}

static const char *rpc_of(cluster *c, uint64_t id) {
  for (size_t i = 0; i < c->member_count; i++)
    if (c->members[i].id == id && c->members[i].rpc[0] != '\0') return c->members[i].rpc;
  return NULL;
}

void cluster__not_leader(cluster *c, char *buf, size_t size) {
  raft_id id = 0;
  const char *raft_addr = NULL;
  if (c->closing) {
    snprintf(buf, size, "node %" PRIu64 " is shutting down: call another node", c->id);
    return;
  }
  raft_leader(&c->raft, &id, &raft_addr);
  const char *rpc = id != 0 ? rpc_of(c, id) : NULL;
  if (id == 0)
    snprintf(buf, size,
             "node %" PRIu64 " is not the leader and no leader is known (an election is under "
             "way, or a majority is unreachable): retry shortly",
             c->id);
  else if (rpc != NULL)
    snprintf(buf, size, "node %" PRIu64 " is not the leader; the leader is node %" PRIu64 " at %s",
             c->id, (uint64_t)id, rpc);
  else
    snprintf(buf, size,
             "node %" PRIu64 " is not the leader; the leader is node %" PRIu64 " (raft %s)", c->id,
             (uint64_t)id, raft_addr ? raft_addr : "?");
}

static void fail_items(cluster__item *it, kyso_status st, const char *msg) {
  while (it != NULL) {
    cluster__item *next = it->next;
    cluster__finish(it, st, msg, NULL, 0);
    it = next;
  }
}

static void unlink_batch(cluster *c, cluster__batch *b) {
  if (b->prev != NULL)
    b->prev->next = b->next;
  else
    c->pending = b->next;
  if (b->next != NULL) b->next->prev = b->prev;
}

static void on_applied(struct raft_apply *req, int status, void *result) {
  cluster__batch *b = req->data;
  cluster *c = b->c;
  char msg[KYSO_ERR_MSG_MAX];
  (void)result; /* the outcomes are in b */
  unlink_batch(c, b);
  uint64_t index = req->index;
  /* Before anyone hears the outcome: a status read after an acknowledgement
   * shows the entry applied (libraft moves last_applied past it only after
   * this callback). */
  cluster__refresh_info(c);
  if (status == 0) {
    pthread_mutex_lock(&c->mu);
    if (c->info.applied_index < index) c->info.applied_index = index;
    pthread_mutex_unlock(&c->mu);
  }
  cluster__item *it = b->items;
  if (status == 0 && b->outcomes != NULL && b->n_outcomes == b->n) {
    for (size_t i = 0; it != NULL; i++) {
      cluster__item *next = it->next;
      const archive_outcome *o = &b->outcomes[i];
      cluster__finish(it, o->st, o->st == KYSO_OK ? "" : o->err.msg, o->result, o->result_len);
      it = next;
    }
  } else {
    if (status == 0)
      snprintf(msg, sizeof(msg), "entry %" PRIu64 " committed without an outcome on this node",
               (uint64_t)req->index);
    else
      snprintf(msg, sizeof(msg),
               "node %" PRIu64 " lost the leadership before entry %" PRIu64
               " committed (%s); whether it was recorded is unknown: retry with the same "
               "request_id",
               c->id, (uint64_t)req->index, raft_strerror(status));
    fail_items(it, status == 0 ? KYSO_INTERNAL : KYSO_UNAVAILABLE, msg);
  }
  archive_outcomes_free(b->outcomes, b->n_outcomes);
  free(b);
}

/* Proposes the commands items..(n of them) as one entry; answers them on failure. */
static void propose(cluster *c, cluster__item *items, size_t n) {
  const uint8_t **cmds = calloc(n, sizeof(*cmds));
  size_t *lens = calloc(n, sizeof(*lens));
  cluster__batch *b = calloc(1, sizeof(*b));
  uint8_t *entry = NULL;
  size_t len = 0;
  kyso_err err = {0};
  char msg[KYSO_ERR_MSG_MAX];
  if (cmds == NULL || lens == NULL || b == NULL) {
    fail_items(items, KYSO_RESOURCE_EXHAUSTED, "out of memory proposing an entry");
    goto out;
  }
  size_t i = 0;
  for (cluster__item *it = items; it != NULL; it = it->next, i++) {
    cmds[i] = it->cmd;
    lens[i] = it->len;
  }
  if (archive_pack_entry(cmds, lens, n, &entry, &len, &err) != KYSO_OK) {
    fail_items(items, err.code, err.msg);
    goto out;
  }
  struct raft_buffer buf;
  if (cluster__frame(entry, len, &buf) != 0) {
    fail_items(items, KYSO_RESOURCE_EXHAUSTED, "out of memory proposing an entry");
    goto out;
  }
  b->c = c;
  b->items = items;
  b->n = n;
  b->req.data = b;
  int rv = raft_apply(&c->raft, &b->req, &buf, 1, on_applied);
  if (rv != 0) {
    raft_free(buf.base);
    if (rv == RAFT_NOTLEADER)
      cluster__not_leader(c, msg, sizeof(msg));
    else
      snprintf(msg, sizeof(msg), "node %" PRIu64 " cannot propose an entry: %s", c->id,
               raft_errmsg(&c->raft));
    fail_items(items, KYSO_UNAVAILABLE, msg);
    goto out;
  }
  /* Pending in index order: raft_apply appends at the end of the log. */
  cluster__batch **tail = &c->pending, *prev = NULL;
  while (*tail != NULL) {
    prev = *tail;
    tail = &(*tail)->next;
  }
  b->prev = prev;
  *tail = b;
  b = NULL;
out:
  free(b);
  free(entry);
  free(cmds);
  free(lens);
}

static void on_barrier(struct raft_barrier *req, int status) {
  cluster__barrier *br = req->data;
  char msg[KYSO_ERR_MSG_MAX];
  if (status != 0)
    snprintf(msg, sizeof(msg), "the read barrier failed (%s): retry", raft_strerror(status));
  for (cluster__item *it = br->item, *next; it != NULL; it = next) {
    next = it->next;
    cluster__finish(it, status == 0 ? KYSO_OK : KYSO_UNAVAILABLE, status == 0 ? "" : msg, NULL,
                    0);
  }
  free(br);
}

/* One barrier entry answers every read that asked for one in this
 * wake-up: reads do not each cost a log entry. */
static void barrier(cluster *c, cluster__item *items) {
  char msg[KYSO_ERR_MSG_MAX];
  cluster__barrier *br = calloc(1, sizeof(*br));
  if (br == NULL) {
    fail_items(items, KYSO_RESOURCE_EXHAUSTED, "out of memory for a read barrier");
    return;
  }
  br->item = items;
  br->req.data = br;
  int rv = raft_barrier(&c->raft, &br->req, on_barrier);
  if (rv != 0) {
    cluster__not_leader(c, msg, sizeof(msg));
    free(br);
    fail_items(items, KYSO_UNAVAILABLE, msg);
  }
}

/* Proposes or answers what was submitted, in order. */
static void process(cluster *c, cluster__item *it) {
  char msg[KYSO_ERR_MSG_MAX];
  if (it != NULL && (c->closing || raft_state(&c->raft) != RAFT_LEADER)) {
    cluster__not_leader(c, msg, sizeof(msg));
    fail_items(it, KYSO_UNAVAILABLE, msg);
    return;
  }
  while (it != NULL) {
    if (it->change) {
      cluster__item *next = it->next;
      it->next = NULL;
      cluster__change(c, it);
      it = next;
      continue;
    }
    if (it->barrier) { /* a run of reads */
      cluster__item *first = it, *last = it;
      while (last->next != NULL && last->next->barrier) last = last->next;
      it = last->next;
      last->next = NULL;
      barrier(c, first);
      continue;
    }
    /* A run of commands, bounded in count and bytes. */
    cluster__item *first = it, *last = it;
    size_t n = 1, bytes = it->len;
    while (last->next != NULL && !last->next->barrier && !last->next->change && n < c->max_batch &&
           bytes + last->next->len <= BATCH_BYTES) {
      last = last->next;
      bytes += last->len;
      n++;
    }
    it = last->next;
    last->next = NULL;
    propose(c, first, n);
  }
}

/* cluster_opts.test_propose_delay_ms: what waited its time goes on. */
static void on_delay(uv_timer_t *t) {
  cluster *c = t->data;
  cluster__item *it = c->held;
  c->held = c->held_tail = NULL;
  process(c, it);
}

void cluster__on_wake(uv_async_t *h) {
  cluster *c = h->data;
  pthread_mutex_lock(&c->mu);
  cluster__item *it = c->head, *last = c->tail;
  c->head = c->tail = NULL;
  c->queued = 0;
  pthread_mutex_unlock(&c->mu);
  if (c->test_delay_ms > 0 && !c->closing) {
    if (it == NULL) return;
    if (c->held_tail != NULL)
      c->held_tail->next = it;
    else
      c->held = it;
    c->held_tail = last;
    if (!uv_is_active((uv_handle_t *)&c->delay))
      uv_timer_start(&c->delay, on_delay, c->test_delay_ms, 0);
    return;
  }
  if (c->held != NULL) { /* closing: what is held is answered first, in order */
    c->held_tail->next = it;
    it = c->held;
    c->held = c->held_tail = NULL;
    uv_timer_stop(&c->delay);
  }
  process(c, it);
}
