/* kysod — the completion thread. A write this node proposes as the leader
 * is answered once its entry applied, but the cluster says so on the Raft
 * loop thread, where no slow work may run. So the outcome is queued here
 * and this thread runs the call's continuation (the reads its answer
 * needs, the answer, rpc_call_finish). No worker and no completion-queue
 * thread waits for a commit. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/log.h"
#include "kysod.h"

typedef struct completion {
  struct completion *next;
  kysod_recorded_fn fn;
  void *ctx;
  kyso_status st;
  kyso_err err;
  uint8_t *result;
  size_t result_len;
} completion;

struct kysod_completions {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  completion *head, *tail;
  int stopping;
  pthread_t thread;
};

static void run(completion *c) {
  c->fn(c->ctx, c->st, &c->err, c->result, c->result_len);
  free(c->result);
  free(c);
}

static void *completions_main(void *arg) {
  kysod_completions *q = arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->head == NULL && !q->stopping) pthread_cond_wait(&q->cv, &q->mu);
    completion *batch = q->head;
    q->head = q->tail = NULL;
    if (batch == NULL) break; /* stopping, and nothing left */
    pthread_mutex_unlock(&q->mu);
    while (batch != NULL) {
      completion *next = batch->next;
      run(batch);
      batch = next;
    }
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

kyso_status kysod__completions_start(kysod *d, kyso_err *err) {
  kysod_completions *q = calloc(1, sizeof(*q));
  if (q == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  if (pthread_create(&q->thread, NULL, completions_main, q) != 0) {
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot start the completion thread");
  }
  d->completions = q;
  return KYSO_OK;
}

void kysod__completions_stop(kysod *d) {
  kysod_completions *q = d->completions;
  if (q == NULL) return;
  pthread_mutex_lock(&q->mu);
  q->stopping = 1;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->thread, NULL); /* it runs what was queued first */
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  free(q);
  d->completions = NULL;
}

void kysod__completions_post(kysod *d, kysod_recorded_fn fn, void *ctx, kyso_status st,
                             const char *msg, const uint8_t *result, size_t result_len) {
  kysod_completions *q = d->completions;
  completion *c = calloc(1, sizeof(*c));
  if (c != NULL && result != NULL && (c->result = malloc(result_len ? result_len : 1)) == NULL) {
    free(c);
    c = NULL;
  }
  if (c == NULL) {
    /* Answered here, as a failure: cheap enough for the caller's thread. */
    kyso_err e = {0};
    kyso_fail(&e, KYSO_RESOURCE_EXHAUSTED,
              "out of memory answering a recorded write; whether it was recorded: retry with "
              "the same request_id");
    fn(ctx, e.code, &e, NULL, 0);
    return;
  }
  c->fn = fn;
  c->ctx = ctx;
  c->st = st;
  if (st != KYSO_OK) kyso_fail(&c->err, st, "%s", msg);
  if (result != NULL) memcpy(c->result, result, result_len);
  c->result_len = result != NULL ? result_len : 0;
  int inline_run = q == NULL;
  if (q != NULL) {
    pthread_mutex_lock(&q->mu);
    inline_run = q->stopping;
    if (!inline_run) {
      if (q->tail != NULL)
        q->tail->next = c;
      else
        q->head = c;
      q->tail = c;
      pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
  }
  if (inline_run) run(c);
}
