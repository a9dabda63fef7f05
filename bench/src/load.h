/* kyso-bench internals: the scenarios' calls (load_calls.c) and the closed
 * and open loops that drive them from worker threads (load_run.c). */
#ifndef KYSO_BENCH_LOAD_H
#define KYSO_BENCH_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "kyso/client.h"
#include "kyso/status.h"

typedef enum { LOAD_SIGN, LOAD_STAMP, LOAD_PUT, LOAD_GET, LOAD_HEALTH } load_scenario;

typedef struct load_opts {
  load_scenario scenario;
  unsigned concurrency;       /* worker threads = calls in flight at most */
  double rate;                /* calls/s in open loop; 0: closed loop */
  double duration_s, warmup_s;
  int64_t timeout_ms;         /* each call's deadline */
  /* sign */
  int format;                 /* Kyso__V1__SignatureFormat; UNSPECIFIED: the node's */
  unsigned keys;
  const char *account_prefix; /* accounts <prefix><i>, i in [0, keys) */
  const char *account;        /* or this one account */
  const char *seal_unit;      /* or this unit's seal */
  int skip_archive;
  /* sign, put, get */
  size_t size;
  unsigned get_docs;
  int quiet;                  /* no progress on stderr */
} load_opts;

/* What went wrong with a call: gRPC status codes 1..16 by their number,
 * then failures the bench sees itself. */
enum {
  LOAD_OK = 0,
  LOAD_ERR_CLIENT = 17,       /* the call could not be made at all */
  LOAD_ERR_BAD_RESPONSE,      /* status OK, but a response that does not parse */
  LOAD_ERR_TSA_REJECTED,      /* Stamp answered, PKIStatus not granted */
  LOAD_ERR_NOT_SERVING,       /* Health answered NOT_SERVING */
  LOAD_ERR_SHORT_READ,        /* Get ended before the document's size */
  LOAD_ERR_KINDS
};
/* "UNAVAILABLE", "TSA_REJECTED" ... */
const char *load_err_name(int kind);

/* One call's outcome. */
typedef struct load_outcome {
  int kind;                   /* LOAD_OK or an error */
  uint64_t bytes;             /* document bytes sent or received */
  char message[512];          /* on error: why */
} load_outcome;

/* Scenario state shared read-only by the workers: documents' filler, the
 * run's id, the Get scenario's document ids. */
typedef struct load_ctx load_ctx;
/* Per-worker scratch buffers. */
typedef struct load_slot load_slot;

/* Builds the shared state; for get, first puts o->get_docs documents
 * through c. o must outlive the context. */
kyso_status load_ctx_open(const load_opts *o, kyso_client *c, load_ctx **out,
                          kyso_err *err) KYSO_MUST_CHECK;
void load_ctx_close(load_ctx *x);
load_slot *load_slot_new(void); /* NULL when out of memory */
void load_slot_free(load_slot *s);
/* Makes call number seq of the scenario (seq picks the document, the key,
 * the Get id) through c, waiting for its end. */
void load_call(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq,
               load_outcome *out);
/* A next step for a person, after an error of this kind, or "". */
const char *load_hint(const load_opts *o, int kind);

/* What a run measured: calls that started (open loop: were due) inside the
 * measured window, however late they ended. */
typedef struct load_result {
  uint64_t ops;               /* successful calls */
  uint64_t errors[LOAD_ERR_KINDS];
  uint64_t error_count;
  uint64_t bytes;
  double elapsed_s;           /* window start to the end of its last call */
  hist *latency;              /* of the successes */
  /* open loop */
  uint64_t due;               /* calls due in the window */
  uint64_t late_starts;       /* started more than 1 ms after they were due */
  uint64_t not_started;       /* given up: the run fell a whole duration behind */
  double max_start_lag_ms;
  /* the first failed call of the window, "" if none */
  char first_error[600];
  int first_error_kind;
} load_result;

/* Runs the warm-up and the measured window, with the workers spread over
 * the clients. r->latency is allocated here (hist_free it). */
kyso_status load_run(const load_opts *o, const load_ctx *x, kyso_client *const *clients,
                     size_t nclients, load_result *r, kyso_err *err) KYSO_MUST_CHECK;

#endif
