/* kyso — the user PIN, held for hsm_reinit.
 *
 * Why keep it at all: a token that went away (a network HSM restarting, a
 * p11-kit remote losing its server) comes back logged out, and kysod must log
 * in again without an operator typing the PIN. So the PIN lives on, but only
 * in one page of its own that is mlock()ed (never written to swap) and
 * excluded from core dumps, wiped and unmapped at hsm_close, and dropped at
 * once if the token ever rejects it (a PIN that no longer works must not be
 * tried again: a real HSM locks the token after a few failures). */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hsm_internal.h"

kyso_status hsm__pin_store(hsm__pin *p, const char *pin, kyso_err *err) {
  kyso_status st = KYSO_OK;
  size_t len = strnlen(pin, KYSO_MAX_PIN + 1);
  long page = sysconf(_SC_PAGESIZE);
  size_t size = page > 0 ? (size_t)page : 4096;
  char *mem = MAP_FAILED;
  if (len == 0 || len > KYSO_MAX_PIN) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "the user PIN must be 1 to %d bytes long",
                   KYSO_MAX_PIN);
    goto out;
  }
  mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot map a page for the PIN: %s",
                   strerror(errno));
    goto out;
  }
  if (mlock(mem, size) != 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "cannot mlock() a page for the PIN (%s); raise RLIMIT_MEMLOCK "
                   "(ulimit -l) for kysod",
                   strerror(errno));
    goto out;
  }
  (void)madvise(mem, size, MADV_DONTDUMP); /* best effort: cores without it */
  memcpy(mem, pin, len);
  p->page = mem;
  p->len = len;
  p->size = size;
  mem = MAP_FAILED;
out:
  if (mem != MAP_FAILED) munmap(mem, size);
  return st;
}

void hsm__pin_wipe(hsm__pin *p) {
  if (p->page == NULL) return;
  kyso_wipe(p->page, p->size);
  munlock(p->page, p->size);
  munmap(p->page, p->size);
  p->page = NULL;
  p->len = p->size = 0;
}
