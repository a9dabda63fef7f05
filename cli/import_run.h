/* kyso CLI — runs the items of a bulk import's steps on a few threads,
 * with a progress bar and a journal so that an interrupted import resumes
 * where it stopped. Every item must be idempotent: the journal only says
 * which prefix of a step is certainly done, and the rest is redone. */
#ifndef KYSO_CLI_IMPORT_RUN_H
#define KYSO_CLI_IMPORT_RUN_H

#include <stddef.h>

/* How one item ended. */
typedef enum { IMPORT_MADE, IMPORT_UNCHANGED, IMPORT_FAILED, IMPORT_RETRY } import_outcome;

/* Does item i; on IMPORT_FAILED or IMPORT_RETRY it says why in msg. */
typedef import_outcome (*import_item_fn)(void *ctx, size_t i, char *msg, size_t msg_size);

typedef struct import_step {
  const char *name;   /* "units", "accounts", "personal keys", "seal keys" */
  size_t n;
  unsigned jobs;      /* threads; 1 keeps the items in order (parents first) */
  import_item_fn fn;
  void *ctx;
  /* filled in by import_run */
  size_t made, unchanged, failed;
} import_step;

/* Runs steps in order. journal: path of the resume file (kept until every
 * step is done), identity: a digest of the inputs, so a journal for other
 * inputs is ignored. progress: 1 redraws a bar on stderr, 0 prints a line
 * every 10 %. Returns the number of items that failed (0: all done), or
 * -1 when the journal cannot be written. */
long import_run(import_step *steps, size_t n_steps, const char *journal, const char *identity,
                int progress);

#endif
