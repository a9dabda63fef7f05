/* kyso tests — checking hsm signatures with OpenSSL alone. */
#ifndef KYSO_TEST_SIG_VERIFY_H
#define KYSO_TEST_SIG_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "kyso/hsm.h"

/* 1 if sig is a valid `mech` signature of the SHA-256 digest under pk. ECDSA
 * signatures arrive raw (r||s) and are DER-encoded here first. */
int sig_verify(EVP_PKEY *pk, hsm_mech mech, const uint8_t digest[32], const uint8_t *sig,
               size_t sig_len);

#endif
