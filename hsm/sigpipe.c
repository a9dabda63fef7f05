/* kyso — keeping SIGPIPE away from the caller while we talk to the module.
 *
 * A network PKCS#11 module writes to a socket; when the far end dies (a
 * p11-kit remote that lost its token), write() raises SIGPIPE, whose default
 * action kills kysod in the middle of a C_Sign — measured with
 * p11-kit-client.so: the process exits with 141 instead of seeing
 * CKR_DEVICE_REMOVED. A library must not change the process's signal
 * dispositions, so each operation blocks SIGPIPE in its own thread (a
 * SIGPIPE from write() is sent to the writing thread), and on the way out
 * consumes one that arrived meanwhile before restoring the mask. */
#include <signal.h>
#include <time.h>

#include "hsm_internal.h"

void hsm__sigpipe_block(hsm__sigpipe *g) {
  sigset_t pipe, pending;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  sigemptyset(&pending);
  sigpending(&pending);
  g->was_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

void hsm__sigpipe_restore(hsm__sigpipe *g) {
  sigset_t pipe, pending;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  sigemptyset(&pending);
  if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
    const struct timespec now = {0, 0};
    sigtimedwait(&pipe, NULL, &now); /* ours: swallow it */
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}
