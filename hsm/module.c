/* kyso — loading a PKCS#11 module: dlopen, C_GetFunctionList, C_Initialize.
 *
 * C_Initialize and C_Finalize act on the whole process, so a module loaded by
 * several hsm handles (two tokens, or a test beside kysod's own handle) is
 * loaded once here and reference-counted: the first acquire initialises it,
 * the last release finalises it. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hsm_internal.h"

struct hsm__module {
  hsm__module *next;
  void *dl;
  CK_FUNCTION_LIST *fl;
  char *path;
  unsigned refs;
  uint64_t gen;     /* bumped by every restart */
  int finalize;     /* we initialised it, so the last release finalises it */
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static hsm__module *registry;

/* OS locking only: the module uses its own native mutexes, which is what
 * SoftHSM and p11-kit expect of a multi-threaded caller. */
static CK_RV initialize(CK_FUNCTION_LIST *fl) {
  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof(args));
  args.flags = CKF_OS_LOCKING_OK;
  return fl->C_Initialize(&args);
}

/* Resolves C_GetFunctionList in dl. dlsym returns an object pointer; POSIX
 * guarantees it converts to a function pointer, memcpy says so without a
 * cast ISO C frowns on. */
static kyso_status function_list(void *dl, const char *path,
                                 CK_FUNCTION_LIST **out, kyso_err *err) {
  CK_C_GetFunctionList get = NULL;
  void *sym = dlsym(dl, "C_GetFunctionList");
  if (sym == NULL)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "'%s' is not a PKCS#11 module: it has no C_GetFunctionList", path);
  memcpy(&get, &sym, sizeof(get));
  CK_RV rv = get(out);
  if (rv != CKR_OK || *out == NULL)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "C_GetFunctionList of PKCS#11 module '%s' failed: %s", path,
                     hsm__rv_name(rv));
  return KYSO_OK;
}

/* RTLD_NODELETE: a module keeps process-wide state (OpenSSL handles, atexit
 * handlers, threads of a network HSM client) that is not safe to unmap while
 * the process runs, so dlclose only drops the reference count. */
kyso_status hsm__module_acquire(const char *path, hsm__module **out,
                                uint64_t *gen, kyso_err *err) {
  kyso_status st = KYSO_OK;
  hsm__module *m = NULL;
  void *dl = NULL;
  *out = NULL;
  pthread_mutex_lock(&registry_mu);
  /* A bare name ("libsofthsm2.so") is resolved by the dynamic linker. */
  if (strchr(path, '/') != NULL && access(path, R_OK) != 0) {
    st = kyso_fail(err, errno == ENOENT ? KYSO_NOT_FOUND : KYSO_FAILED_PRECONDITION,
                   "cannot load PKCS#11 module '%s': %s", path, strerror(errno));
    goto out;
  }
  dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (dl == NULL) {
    const char *why = dlerror();
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot load PKCS#11 module '%s': %s",
                   path, why ? why : "dlopen failed");
    goto out;
  }
  for (m = registry; m != NULL; m = m->next)
    if (m->dl == dl) break;
  if (m != NULL) { /* already ours: one more user */
    m->refs++;
    goto out;
  }
  m = calloc(1, sizeof(*m));
  if (m == NULL || (m->path = strdup(path)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory loading '%s'", path);
    goto out;
  }
  if ((st = function_list(dl, path, &m->fl, err)) != KYSO_OK) goto out;
  CK_RV rv = initialize(m->fl);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "C_Initialize of PKCS#11 module '%s' failed: %s", path, hsm__rv_name(rv));
    goto out;
  }
  /* Initialised by someone outside kyso: leave finalising to them. */
  m->finalize = rv == CKR_OK;
  m->dl = dl;
  dl = NULL;
  m->refs = 1;
  m->next = registry;
  registry = m;
out:
  if (st == KYSO_OK) {
    *out = m;
    *gen = m->gen;
  } else if (m != NULL) {
    free(m->path);
    free(m);
  }
  if (dl != NULL) dlclose(dl);
  pthread_mutex_unlock(&registry_mu);
  return st;
}

void hsm__module_release(hsm__module *m) {
  if (m == NULL) return;
  pthread_mutex_lock(&registry_mu);
  if (--m->refs == 0) {
    hsm__module **pp = &registry;
    while (*pp != m) pp = &(*pp)->next;
    *pp = m->next;
    if (m->finalize) m->fl->C_Finalize(NULL);
    dlclose(m->dl);
    free(m->path);
    free(m);
  }
  pthread_mutex_unlock(&registry_mu);
}

/* Another hsm on the same module may be mid-call while we finalise; it then
 * sees CKR_CRYPTOKI_NOT_INITIALIZED or a stale handle, answers UNAVAILABLE,
 * and its own reinit finds the generation moved on and skips the restart. */
kyso_status hsm__module_restart(hsm__module *m, uint64_t *gen, kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_mutex_lock(&registry_mu);
  if (m->gen == *gen) {
    m->fl->C_Finalize(NULL);
    CK_RV rv = initialize(m->fl);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      st = kyso_fail(err, KYSO_UNAVAILABLE,
                     "C_Initialize of PKCS#11 module '%s' failed: %s", m->path,
                     hsm__rv_name(rv));
      goto out;
    }
    m->finalize = 1;
    m->gen++;
  }
  *gen = m->gen;
out:
  pthread_mutex_unlock(&registry_mu);
  return st;
}

CK_FUNCTION_LIST *hsm__module_functions(const hsm__module *m) { return m->fl; }

const char *hsm__module_path(const hsm__module *m) { return m->path; }
