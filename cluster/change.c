/* cluster — membership changes, on the loop thread: add (then promote to
 * voter once libraft's catch-up rounds brought the node up to date),
 * remove, transfer the leadership. libraft takes one change at a time. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cluster_internal.h"
#include "kyso/log.h"

typedef struct change {
  struct raft_change req;
  struct raft_transfer treq;
  cluster *c;
  cluster__item *it;
} change;

/* libraft's refusal of a change, as a status and a message. */
static void answer(change *ch, int rv) {
  cluster *c = ch->c;
  cluster__item *it = ch->it;
  char msg[KYSO_ERR_MSG_MAX];
  kyso_status st = KYSO_OK;
  switch (rv) {
    case 0: msg[0] = '\0'; break;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
      st = KYSO_UNAVAILABLE;
      cluster__not_leader(c, msg, sizeof(msg));
      break;
    case RAFT_NOCONNECTION:
      st = KYSO_UNAVAILABLE;
      snprintf(msg, sizeof(msg),
               "node %" PRIu64 " did not catch up with the log: is it running, reachable, and "
               "started with [cluster] join = true? It stays in the configuration as a "
               "non-voter: remove it or add it again",
               it->change_id);
      break;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADID:
    case RAFT_NOTFOUND:
    case RAFT_BADROLE:
    case RAFT_CANTCHANGE:
      st = KYSO_FAILED_PRECONDITION;
      snprintf(msg, sizeof(msg), "node %" PRIu64 ": %s", it->change_id, raft_strerror(rv));
      break;
    default:
      st = KYSO_UNAVAILABLE;
      snprintf(msg, sizeof(msg), "the membership change failed: %s", raft_strerror(rv));
  }
  if (st == KYSO_OK)
    kyso_log(KYSO_LOG_INFO, "cluster: membership change %d of node %" PRIu64 " done", it->change,
             it->change_id);
  cluster__finish(it, st, msg, NULL, 0);
  free(ch);
  cluster__refresh_info(c);
}

static void on_promoted(struct raft_change *req, int status) { answer(req->data, status); }

static void on_added(struct raft_change *req, int status) {
  change *ch = req->data;
  if (status != 0) {
    answer(ch, status);
    return;
  }
  int rv = raft_assign(&ch->c->raft, &ch->req, ch->it->change_id, RAFT_VOTER, on_promoted);
  if (rv != 0) answer(ch, rv);
}

static void on_removed(struct raft_change *req, int status) { answer(req->data, status); }

static void on_transferred(struct raft_transfer *req) {
  change *ch = req->data;
  raft_id leader = 0;
  const char *addr = NULL;
  raft_leader(&ch->c->raft, &leader, &addr);
  int moved = ch->it->change_id != 0 ? leader == ch->it->change_id
                                     : leader != 0 && leader != ch->c->id;
  if (moved) {
    answer(ch, 0);
    return;
  }
  char msg[KYSO_ERR_MSG_MAX];
  snprintf(msg, sizeof(msg),
           "the leadership did not move to %s within an election timeout (the leader is node "
           "%" PRIu64 "): is the target a voter, running and up to date?",
           ch->it->change_id ? "that node" : "another voter", (uint64_t)leader);
  cluster *c = ch->c;
  cluster__finish(ch->it, KYSO_UNAVAILABLE, msg, NULL, 0);
  free(ch);
  cluster__refresh_info(c);
}

void cluster__change(cluster *c, cluster__item *it) {
  change *ch = calloc(1, sizeof(*ch));
  int rv;
  if (ch == NULL) {
    cluster__finish(it, KYSO_RESOURCE_EXHAUSTED, "out of memory for a membership change", NULL, 0);
    return;
  }
  ch->c = c;
  ch->it = it;
  ch->req.data = ch;
  ch->treq.data = ch;
  switch (it->change) {
    case CLUSTER_CHANGE_ADD:
      rv = raft_add(&c->raft, &ch->req, it->change_id, it->change_address, on_added);
      break;
    case CLUSTER_CHANGE_REMOVE:
      rv = raft_remove(&c->raft, &ch->req, it->change_id, on_removed);
      break;
    default:
      rv = raft_transfer(&c->raft, &ch->treq, it->change_id, on_transferred);
      break;
  }
  if (rv != 0) answer(ch, rv);
}
