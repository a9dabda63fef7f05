/* kyso — the worker pool: a bounded FIFO of calls drained by a fixed set of
 * threads, so that completion-queue threads never wait for slow work and a
 * burst beyond the cap is refused instead of queued without end. */
#include <stdlib.h>

#include "rpc_internal.h"

struct rpc__pool {
  pthread_mutex_t mu;
  pthread_cond_t nonempty;
  void **ring;
  unsigned cap;
  unsigned head;
  unsigned count;
  int stopping;
  rpc__pool_fn fn;
  void *ctx;
  pthread_t *threads;
  unsigned nthreads;   /* threads actually started */
};

static void *pool_main(void *arg) {
  rpc__pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->count == 0 && !p->stopping) pthread_cond_wait(&p->nonempty, &p->mu);
    if (p->count == 0) break; /* stopping and drained */
    void *item = p->ring[p->head];
    p->head = (p->head + 1) % p->cap;
    p->count--;
    pthread_mutex_unlock(&p->mu);
    p->fn(item, p->ctx);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

kyso_status rpc__pool_start(unsigned threads, unsigned cap, rpc__pool_fn fn,
                            void *ctx, rpc__pool **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  rpc__pool *p = NULL;
  *out = NULL;
  if (threads == 0 || cap == 0 || fn == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "worker pool needs at least one thread and a queue (got %u threads, cap %u)",
                     threads, cap);
  p = calloc(1, sizeof(*p));
  if (p == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the worker pool");
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->nonempty, NULL);
  p->cap = cap;
  p->fn = fn;
  p->ctx = ctx;
  p->ring = calloc(cap, sizeof(*p->ring));
  p->threads = calloc(threads, sizeof(*p->threads));
  if (p->ring == NULL || p->threads == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                   "out of memory for a worker queue of %u calls", cap);
    goto out;
  }
  for (; p->nthreads < threads; p->nthreads++) {
    if (pthread_create(&p->threads[p->nthreads], NULL, pool_main, p) != 0) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "cannot start worker thread %u of %u", p->nthreads + 1, threads);
      goto out;
    }
  }
  *out = p;
  p = NULL;
out:
  rpc__pool_stop(p);
  return st;
}

int rpc__pool_submit(rpc__pool *p, void *item) {
  int rc = -1;
  pthread_mutex_lock(&p->mu);
  if (!p->stopping && p->count < p->cap) {
    p->ring[(p->head + p->count) % p->cap] = item;
    p->count++;
    pthread_cond_signal(&p->nonempty);
    rc = 0;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void rpc__pool_stop(rpc__pool *p) {
  if (p == NULL) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->nonempty);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->nonempty);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p->ring);
  free(p);
}
