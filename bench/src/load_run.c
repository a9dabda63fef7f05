/* kyso-bench — the loops. Closed: each worker issues its next call when the
 * previous returns. Open: call i is due at t0 + i/R; a worker claims the
 * next i, sleeps until it is due and times it from then, so a call that
 * starts late because every worker was busy still counts its wait (no
 * coordinated omission). Each worker records into its own histogram and
 * counters; they are merged once the workers are done. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "load.h"

#define NS_PER_S UINT64_C(1000000000)
#define LATE_NS UINT64_C(1000000) /* an open-loop start this late is "late" */

typedef struct run run;

typedef struct worker {
  run *r;
  kyso_client *c;
  load_slot *slot;
  hist *h;
  pthread_t th;
  /* read by the progress line while the worker runs */
  _Atomic uint64_t done, failed;
  /* the measured window only; read after join */
  uint64_t ops, bytes, errors[LOAD_ERR_KINDS], started, late, max_lag_ns, last_end;
} worker;

struct run {
  const load_opts *o;
  const load_ctx *x;
  uint64_t t0, t_window, t_end, t_give_up; /* CLOCK_MONOTONIC ns */
  double interval_ns;                      /* open loop: 1e9 / rate */
  _Atomic uint64_t next;                   /* the next call number to claim */
  _Atomic int gave_up;
  _Atomic unsigned running;
  pthread_mutex_t mu;                      /* guards go and first_* */
  pthread_cond_t cv;
  int go;                                  /* 1: start, -1: abandon */
  _Atomic int have_first;
  char first[600];
  int first_kind;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t) {
  struct timespec ts = {(time_t)(t / NS_PER_S), (long)(t % NS_PER_S)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* When open-loop call i is due. */
static uint64_t due_of(const run *r, uint64_t i) {
  return r->t0 + (uint64_t)((double)i * r->interval_ns);
}

/* The first open-loop call number due at or after t. */
static uint64_t first_due_at(const run *r, uint64_t t) {
  if (t <= r->t0) return 0;
  uint64_t i = (uint64_t)((double)(t - r->t0) / r->interval_ns);
  while (i > 0 && due_of(r, i - 1) >= t) i--;
  while (due_of(r, i) < t) i++;
  return i;
}

static void note_first_error(run *r, const load_outcome *out) {
  if (atomic_load_explicit(&r->have_first, memory_order_relaxed)) return;
  pthread_mutex_lock(&r->mu);
  if (!r->have_first) {
    snprintf(r->first, sizeof(r->first), "%s", out->message);
    r->first_kind = out->kind;
    atomic_store(&r->have_first, 1);
  }
  pthread_mutex_unlock(&r->mu);
}

/* One finished call: due is when it should have started (closed loop: when
 * it did), start when it did, end when it returned. */
static void account(worker *w, uint64_t due, uint64_t start, uint64_t end,
                    const load_outcome *out) {
  run *r = w->r;
  atomic_fetch_add_explicit(&w->done, 1, memory_order_relaxed);
  if (out->kind != LOAD_OK) atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
  if (due < r->t_window) return; /* warm-up */
  w->started++;
  if (out->kind == LOAD_OK) {
    w->ops++;
    w->bytes += out->bytes;
    hist_record_ns(w->h, end - due);
  } else {
    w->errors[out->kind]++;
    note_first_error(r, out);
  }
  if (end > w->last_end) w->last_end = end;
  uint64_t lag = start - due;
  if (lag > LATE_NS) w->late++;
  if (lag > w->max_lag_ns) w->max_lag_ns = lag;
}

static void closed_loop(worker *w) {
  run *r = w->r;
  load_outcome out;
  for (;;) {
    uint64_t start = now_ns();
    if (start >= r->t_end) break;
    uint64_t seq = atomic_fetch_add(&r->next, 1) + 1; /* 0 was the preflight */
    load_call(r->x, w->slot, w->c, seq, &out);
    account(w, start, start, now_ns(), &out);
  }
}

static void open_loop(worker *w) {
  run *r = w->r;
  load_outcome out;
  while (!atomic_load_explicit(&r->gave_up, memory_order_relaxed)) {
    uint64_t i = atomic_fetch_add(&r->next, 1);
    uint64_t due = due_of(r, i);
    if (due >= r->t_end) break;
    sleep_until(due);
    uint64_t start = now_ns();
    /* A whole duration behind: the run would never end; say so instead. */
    if (start > r->t_give_up) {
      atomic_store(&r->gave_up, 1);
      break;
    }
    load_call(r->x, w->slot, w->c, i + 1, &out);
    account(w, due, start, now_ns(), &out);
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  run *r = w->r;
  pthread_mutex_lock(&r->mu);
  while (r->go == 0) pthread_cond_wait(&r->cv, &r->mu);
  int go = r->go;
  pthread_mutex_unlock(&r->mu);
  if (go > 0) {
    sleep_until(r->t0);
    if (r->o->rate > 0)
      open_loop(w);
    else
      closed_loop(w);
  }
  atomic_fetch_sub(&r->running, 1);
  return NULL;
}

static void start_workers(run *r, int go) {
  pthread_mutex_lock(&r->mu);
  r->go = go;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Once a second: calls so far and the rate over the last second. */
static void progress(run *r, worker *ws, size_t n) {
  uint64_t next = r->t0 + NS_PER_S, prev_done = 0, prev_t = r->t0;
  while (atomic_load(&r->running) > 0) {
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    uint64_t t = now_ns();
    if (r->o->quiet || t < next) continue;
    uint64_t done = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
      done += atomic_load_explicit(&ws[i].done, memory_order_relaxed);
      failed += atomic_load_explicit(&ws[i].failed, memory_order_relaxed);
    }
    const char *phase = t < r->t_window ? "warm-up" : t < r->t_end ? "measuring" : "finishing";
    fprintf(stderr, "kyso-bench: %5.1f s %-9s %llu calls, %.0f/s, %llu errors\n",
            (double)(t - r->t0) / 1e9, phase, (unsigned long long)done,
            (double)(done - prev_done) * 1e9 / (double)(t - prev_t), (unsigned long long)failed);
    prev_done = done;
    prev_t = t;
    while (next <= t) next += NS_PER_S;
  }
}

static void collect(run *r, worker *ws, size_t n, load_result *res) {
  uint64_t last_end = 0, started = 0;
  for (size_t i = 0; i < n; i++) {
    worker *w = &ws[i];
    hist_merge(res->latency, w->h);
    res->ops += w->ops;
    res->bytes += w->bytes;
    for (int k = 0; k < LOAD_ERR_KINDS; k++) {
      res->errors[k] += w->errors[k];
      res->error_count += w->errors[k];
    }
    res->late_starts += w->late;
    if ((double)w->max_lag_ns / 1e6 > res->max_start_lag_ms)
      res->max_start_lag_ms = (double)w->max_lag_ns / 1e6;
    if (w->last_end > last_end) last_end = w->last_end;
    started += w->started;
  }
  /* Until the last counted call ended: an open loop the node could not
   * keep up with ends late, and its throughput must show that. */
  uint64_t window = r->t_end - r->t_window;
  if (last_end > r->t_window && last_end - r->t_window > window) window = last_end - r->t_window;
  res->elapsed_s = (double)window / 1e9;
  if (r->o->rate > 0) {
    res->due = first_due_at(r, r->t_end) - first_due_at(r, r->t_window);
    res->not_started = res->due > started ? res->due - started : 0;
  }
  if (r->have_first) {
    snprintf(res->first_error, sizeof(res->first_error), "%s", r->first);
    res->first_error_kind = r->first_kind;
  }
}

kyso_status load_run(const load_opts *o, const load_ctx *x, kyso_client *const *clients,
                     size_t nclients, load_result *res, kyso_err *err) {
  kyso_status st = KYSO_OK;
  size_t n = o->concurrency, made = 0;
  run *r = calloc(1, sizeof(*r));
  worker *ws = calloc(n, sizeof(*ws));
  memset(res, 0, sizeof(*res));
  if (r == NULL || ws == NULL || (res->latency = hist_new()) == NULL) {
    free(r);
    r = NULL;
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %zu workers", n);
    goto out;
  }
  r->o = o;
  r->x = x;
  r->interval_ns = o->rate > 0 ? 1e9 / o->rate : 0;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  for (size_t i = 0; i < n; i++) {
    ws[i].r = r;
    ws[i].c = clients[i % nclients];
    if ((ws[i].slot = load_slot_new()) == NULL || (ws[i].h = hist_new()) == NULL) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for worker %zu", i);
      goto out;
    }
  }
  for (; made < n; made++) {
    atomic_fetch_add(&r->running, 1);
    int e = pthread_create(&ws[made].th, NULL, worker_main, &ws[made]);
    if (e != 0) {
      atomic_fetch_sub(&r->running, 1);
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "cannot start worker thread %zu of %zu (%s): lower --concurrency", made + 1,
                     n, strerror(e));
      goto out;
    }
  }
  /* Every thread exists before the clock starts, so none starts late. */
  r->t0 = now_ns() + 10 * 1000 * 1000;
  r->t_window = r->t0 + (uint64_t)(o->warmup_s * 1e9);
  r->t_end = r->t_window + (uint64_t)(o->duration_s * 1e9);
  r->t_give_up = r->t_end + (uint64_t)(o->duration_s * 1e9);
  start_workers(r, 1);
  progress(r, ws, n);
out:
  if (r != NULL) {
    if (st != KYSO_OK) start_workers(r, -1); /* those started leave at once */
    for (size_t i = 0; i < made; i++) pthread_join(ws[i].th, NULL);
    if (st == KYSO_OK) collect(r, ws, n, res);
    for (size_t i = 0; i < n; i++) {
      load_slot_free(ws[i].slot);
      hist_free(ws[i].h);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
  }
  if (st != KYSO_OK) {
    hist_free(res->latency);
    res->latency = NULL;
  }
  free(ws);
  free(r);
  return st;
}
