/* kyso signer tests — a signer over the in-memory fake HSM, with a
 * throw-away PKI and certificate store in a temporary directory. */
#ifndef KYSO_TESTS_FAKE_FIXTURE_H
#define KYSO_TESTS_FAKE_FIXTURE_H

#include <stddef.h>

#include "kyso/hsm.h"
#include "kyso/signer.h"

typedef struct fake_fixture {
  char dir[256];
  char pki[512];   /* pki.sh init output: root.pem, chain.pem, ... */
  char certs[512]; /* the signer's certificate store */
  hsm *h;
  signer *s;
} fake_fixture;

typedef struct fake_key {
  const char *label;
  hsm_key_type type;
} fake_key;

/* NULL (with the reason on stderr) if any step fails. */
fake_fixture *fake_fixture_new(const char *tag, const fake_key *keys, size_t count);
void fake_fixture_free(fake_fixture *f);

#endif
