/* kyso tests — an in-memory stand-in for hsm/ (software keys from OpenSSL's
 * default provider), so the signer can be tested without a token and with
 * failures injected on demand. Implements only what signer/ calls. */
#ifndef KYSO_TESTS_FAKE_HSM_H
#define KYSO_TESTS_FAKE_HSM_H

#include "kyso/hsm.h"

hsm *fake_hsm_new(void);
void fake_hsm_free(hsm *h);
/* Generates a software key of type under label; 0 on failure. */
int fake_hsm_add(hsm *h, const char *label, hsm_key_type type);
/* The private key behind label (borrowed), for making test certificates. */
EVP_PKEY *fake_hsm_private(hsm *h, const char *label);
/* Makes the next n hsm_sign_digest calls fail with code. */
void fake_hsm_fail_signs(hsm *h, kyso_status code, int n);
/* hsm_sign_digest calls so far. */
long fake_hsm_sign_count(hsm *h);

#endif
