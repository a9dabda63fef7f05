/* cluster/ internals: the loop thread's state. Fields marked "loop" are
 * touched only on the loop thread; "mu" ones only under mu. */
#ifndef KYSO_CLUSTER_INTERNAL_H
#define KYSO_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "kyso/cluster.h"

/* What the Raft configuration stores as a member's address: with TLS,
 * "RAFT/RPC" (so every node learns every member's client address from the
 * replicated configuration itself); plain TCP, the Raft address alone. */
#define CLUSTER__WIRE_ADDRESS (2 * CLUSTER_MAX_ADDRESS + 2)
void cluster__wire_address(int tls, const char *raft, const char *rpc,
                           char out[CLUSTER__WIRE_ADDRESS]);
/* Splits a configuration address into its parts (rpc "" if none). */
void cluster__split_address(const char *wire, char raft[CLUSTER_MAX_ADDRESS + 1],
                            char rpc[CLUSTER_MAX_ADDRESS + 1]);

/* One queued submission: a command to propose, or a barrier. */
typedef struct cluster__item {
  int barrier;
  cluster_change_op change;    /* 0: not a membership change */
  uint64_t change_id;
  char change_address[CLUSTER__WIRE_ADDRESS];
  uint8_t *cmd;
  size_t len;
  cluster_done_fn done;
  void *ctx;
  struct cluster__item *next;
} cluster__item;

/* One proposed entry (a raft_apply request) and the submissions it carries. */
typedef struct cluster__batch {
  struct raft_apply req; /* req.data = the batch; req.index set by raft_apply */
  cluster *c;
  cluster__item *items;
  size_t n;
  archive_outcome *outcomes; /* filled by apply on this node */
  size_t n_outcomes;
  struct cluster__batch *prev, *next;
} cluster__batch;

typedef struct cluster__barrier {
  struct raft_barrier req;
  cluster__item *item; /* every read it answers (a list) */
} cluster__barrier;

struct cluster {
  uint64_t id;
  archive *archive;
  char *dir;
  unsigned max_batch, max_queued;
  void (*applied)(void *ctx, const archive_outcome *outcomes, size_t n);
  void *applied_ctx;
  int (*checkpoint_needed)(void *ctx, uint64_t index);
  void *checkpoint_ctx;
  size_t member_count;
  struct {
    uint64_t id;
    char raft[CLUSTER_MAX_ADDRESS + 1];
    char rpc[CLUSTER_MAX_ADDRESS + 1];
  } members[CLUSTER_MAX_MEMBERS];

  /* loop */
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick;
  struct raft_uv_transport transport;
  int tls; /* transport is ours (mutual TLS), not raft_uv_tcp */
  struct raft_io io;
  struct raft_fsm fsm;
  struct raft raft;
  cluster__batch *pending; /* proposed, not yet answered, in index order */
  unsigned test_delay_ms;   /* cluster_opts.test_propose_delay_ms */
  uv_timer_t delay;         /* fires when what is held has waited test_delay_ms */
  cluster__item *held, *held_tail;
  int closing;
  uint64_t snapshots_taken, snapshots_installed;
  unsigned election_ms;
  struct {
    uint64_t id;
    uint64_t ms; /* loop time a message from it was last seen (leader only) */
  } heard[CLUSTER_MAX_MEMBERS];

  pthread_t thread;
  int thread_started;

  pthread_mutex_t mu;
  cluster__item *head, *tail; /* mu */
  unsigned queued;            /* mu */
  int stopping;               /* mu */
  cluster_info info;          /* mu: refreshed by the loop */

  /* Serving on any node (applied.c): how far this node applied, for a
   * follower that waits until it holds what the leader answered. */
  uint64_t applied_cmd;       /* mu: index of the last command entry applied */
  pthread_cond_t applied_cv;  /* mu: signalled when it or info.applied_index grows */
};

/* Log entry framing. libraft 0.15 encodes a batch of entries assuming each
 * payload is a multiple of 8 bytes (a shorter one is read past its end on
 * the receiving side), so a payload is: "kyE1", the length of the
 * kyso.store.v1.Entry (u32 big-endian), the Entry, zero padding. */
#define CLUSTER__FRAME_MAGIC "kyE1"
#define CLUSTER__FRAME_HEADER 8
/* A raft_malloc()ed frame of entry (len bytes) into *out. 0, or RAFT_NOMEM. */
int cluster__frame(const uint8_t *entry, size_t len, struct raft_buffer *out);
/* The Entry inside a frame; 0 if the frame is not one. */
int cluster__unframe(const struct raft_buffer *buf, const uint8_t **entry, size_t *len);

/* fsm.c: the state machine libraft drives (apply, snapshot, restore). */
void cluster__fsm_init(cluster *c);

/* queue.c: draining submissions on the loop thread. */
void cluster__on_wake(uv_async_t *h);
/* Answers one submission and frees it. */
void cluster__finish(cluster__item *it, kyso_status st, const char *msg, const uint8_t *result,
                     size_t len);
/* Why this node cannot take a write or a barrier now (into buf). */
void cluster__not_leader(cluster *c, char *buf, size_t size);

/* tls_transport.c: a raft_uv_transport over mutual TLS 1.3. */
kyso_status cluster__tls_transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                                        const cluster_tls *tls, kyso_err *err);
/* After libraft closed the transport. */
void cluster__tls_transport_free(struct raft_uv_transport *t);

/* change.c: membership changes on the loop thread; answers it. */
void cluster__change(cluster *c, cluster__item *it);

/* cluster.c */
/* Copies what the loop knows into c->info (under mu). */
void cluster__refresh_info(cluster *c);

/* applied.c: what this node applied, and waiting for it. */
kyso_status cluster__applied_init(cluster *c, kyso_err *err);
void cluster__applied_destroy(cluster *c);
/* now + timeout_ms (0 if negative) on CLOCK_MONOTONIC, for a timed wait. */
void cluster__deadline(int64_t timeout_ms, struct timespec *until);
/* After this node applied the command entry at index (loop thread). */
void cluster__applied_note(cluster *c, uint64_t index);
/* Wakes the waiters; under mu. */
void cluster__applied_signal_locked(cluster *c);

#endif
