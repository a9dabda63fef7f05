/* kysod — HSM recovery: when the token goes away (UNAVAILABLE from hsm/),
 * one thread re-initialises the module and rebuilds the key map while the
 * others answer UNAVAILABLE at once instead of queueing behind it. */
#include <stdatomic.h>

#include "kyso/log.h"
#include "kysod.h"

kyso_status kysod__recover_hsm(kysod *d, kyso_err *err) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&d->hsm_recovering, &expected, 1))
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "the HSM is being re-initialised after a failure; retry shortly");
  kyso_log(KYSO_LOG_WARN, "HSM token '%s' unavailable (%s); re-initialising", d->cfg.hsm_token,
           err->msg);
  kyso_err rerr = {0};
  kyso_status st = hsm_reinit(d->hsm, &rerr);
  if (st == KYSO_OK)
    kyso_log(KYSO_LOG_INFO, "HSM token '%s' re-initialised", d->cfg.hsm_token);
  else
    kyso_log(KYSO_LOG_ERROR, "HSM token '%s' could not be re-initialised: %s",
             d->cfg.hsm_token, rerr.msg);
  atomic_store(&d->hsm_recovering, 0);
  if (st != KYSO_OK)
    return kyso_fail(err, KYSO_UNAVAILABLE, "HSM token '%s' is unavailable: %s", d->cfg.hsm_token,
                     rerr.msg);
  return KYSO_OK;
}
