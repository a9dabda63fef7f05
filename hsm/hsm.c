/* kyso — the hsm handle's lifecycle: open, reinit, close.
 *
 * Locking: h->life is held for reading by every operation for its whole
 * duration and for writing by hsm_reinit and hsm_close, so a reinit never
 * closes a session under a running C_Sign; the key map has its own rwlock
 * for generate-versus-lookup; the pool has a mutex and condvar. No operation
 * takes h->life twice (it prefers writers, so a nested read could deadlock). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"

/* Closes every session (which also logs out) and forgets every handle. */
static void disconnect(hsm *h) {
  if (h->fl != NULL) hsm__pool_close_all(&h->pool, h->fl);
  hsm__keymap_clear(&h->map);
}

/* Finds the token, opens max_sessions sessions, logs in on the first (login
 * state is shared by all sessions of the process to that token) and builds
 * the key map. On failure nothing stays open. */
static kyso_status connect_token(hsm *h, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  const CK_FLAGS flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
  const char *path = hsm__module_path(h->mod);
  if ((st = hsm__token_find(h->fl, path, h->token, &h->slot, err)) != KYSO_OK) goto out;
  for (unsigned i = 0; i < h->max_sessions; i++) {
    CK_RV rv = h->fl->C_OpenSession(h->slot.id, flags, NULL, NULL, &s);
    if (rv != CKR_OK) {
      st = hsm__fail_rv(err, rv, h->token, "opening session %u of %u to token '%s'", i + 1,
                        h->max_sessions, h->token);
      goto out;
    }
    if (i == 0 && (st = hsm__token_login(h->fl, s, h->token, &h->slot, &h->pin, err)) != KYSO_OK)
      goto out;
    if (i == 0 && (st = hsm__keyscan(h->fl, s, h->token, &h->map, err)) != KYSO_OK) goto out;
    hsm__pool_add(&h->pool, s);
    s = CK_INVALID_HANDLE;
  }
out:
  if (s != CK_INVALID_HANDLE) h->fl->C_CloseSession(s);
  if (st != KYSO_OK) disconnect(h);
  return st;
}

static kyso_status check_opts(const hsm_opts *o, kyso_err *err) {
  if (o == NULL || o->module_path == NULL || o->module_path[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm: a PKCS#11 module path is required");
  if (o->token_label == NULL || o->token_label[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm: a token label is required");
  if (strlen(o->token_label) > 32)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "token label '%.40s' is longer than PKCS#11's 32 bytes", o->token_label);
  if (o->pin == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm: the user PIN for token '%s' is required",
                     o->token_label);
  if (o->max_sessions < 1 || o->max_sessions > KYSO_HSM_MAX_SESSIONS)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm: max_sessions is %u, must be 1..%d",
                     o->max_sessions, KYSO_HSM_MAX_SESSIONS);
  return KYSO_OK;
}

/* Sets up the locks, pool and map; h is zeroed. */
static kyso_status init_locks(hsm *h, unsigned sessions, kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_rwlockattr_t a;
  if (pthread_rwlockattr_init(&a) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot initialise the hsm lock");
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  if (pthread_rwlock_init(&h->life, &a) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot initialise the hsm lock");
    goto out;
  }
  if ((st = hsm__pool_init(&h->pool, sessions, err)) != KYSO_OK) goto out;
  st = hsm__keymap_init(&h->map, err);
out:
  pthread_rwlockattr_destroy(&a);
  return st;
}

kyso_status hsm_open(const hsm_opts *opts, hsm **out, kyso_err *err) {
  kyso_status st;
  hsm *h = NULL;
  int locks = 0;
  hsm__sigpipe g;
  if (out == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_open: out is NULL");
  *out = NULL;
  hsm__sigpipe_block(&g);
  if ((st = check_opts(opts, err)) != KYSO_OK) goto out;
  h = calloc(1, sizeof(*h));
  if (h == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening token '%s'",
                   opts->token_label);
    goto out;
  }
  snprintf(h->token, sizeof(h->token), "%s", opts->token_label);
  h->max_sessions = opts->max_sessions;
  if ((st = init_locks(h, opts->max_sessions, err)) != KYSO_OK) goto out;
  locks = 1;
  if ((st = hsm__pin_store(&h->pin, opts->pin, err)) != KYSO_OK) goto out;
  if ((st = hsm__module_acquire(opts->module_path, &h->mod, &h->mod_gen, err)) != KYSO_OK)
    goto out;
  h->fl = hsm__module_functions(h->mod);
  if ((st = connect_token(h, err)) != KYSO_OK) goto out;
  h->ready = 1;
out:
  if (st == KYSO_OK) {
    *out = h;
  } else if (h != NULL && locks) {
    hsm_close(h);
  } else if (h != NULL) { /* init_locks failed part-way: undo what it did */
    hsm__keymap_destroy(&h->map);
    hsm__pool_destroy(&h->pool);
    free(h);
  }
  hsm__sigpipe_restore(&g);
  return st;
}

void hsm_close(hsm *h) {
  hsm__sigpipe g;
  if (h == NULL) return;
  hsm__sigpipe_block(&g);
  pthread_rwlock_wrlock(&h->life); /* waits for operations still running */
  disconnect(h);
  hsm__module_release(h->mod);
  hsm__pin_wipe(&h->pin);
  pthread_rwlock_unlock(&h->life);
  hsm__keymap_destroy(&h->map);
  hsm__pool_destroy(&h->pool);
  pthread_rwlock_destroy(&h->life);
  free(h);
  hsm__sigpipe_restore(&g);
}

kyso_status hsm_reinit(hsm *h, kyso_err *err) {
  kyso_status st = KYSO_OK;
  hsm__sigpipe g;
  kyso_err local;
  if (err == NULL) err = &local; /* the reason is kept in h->down either way */
  if (h == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_reinit: no hsm");
  hsm__sigpipe_block(&g);
  pthread_rwlock_wrlock(&h->life);
  h->ready = 0;
  disconnect(h);
  if ((st = hsm__module_restart(h->mod, &h->mod_gen, err)) != KYSO_OK) goto out;
  if ((st = connect_token(h, err)) != KYSO_OK) goto out;
  h->ready = 1;
out:
  if (st != KYSO_OK) {
    if (st == KYSO_UNAUTHENTICATED) hsm__pin_wipe(&h->pin); /* never try it again */
    snprintf(h->down, sizeof(h->down), "%s", err->msg);
    kyso_err_wrap(err, "reinitialising HSM token '%s'", h->token);
  }
  pthread_rwlock_unlock(&h->life);
  hsm__sigpipe_restore(&g);
  return st;
}

kyso_status hsm__enter(hsm *h, hsm__sigpipe *g, kyso_err *err) {
  if (h == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "no hsm");
  pthread_rwlock_rdlock(&h->life);
  if (h->ready) {
    hsm__sigpipe_block(g);
    return KYSO_OK;
  }
  kyso_status st = kyso_fail(err, KYSO_UNAVAILABLE,
                             "HSM token '%s' is not initialised (last reinit: %s); kysod will "
                             "reinitialise it",
                             h->token, h->down);
  pthread_rwlock_unlock(&h->life);
  return st;
}

void hsm__leave(hsm *h, hsm__sigpipe *g) {
  hsm__sigpipe_restore(g);
  pthread_rwlock_unlock(&h->life);
}
