/* kyso signer tests — the shared fake-HSM fixture. */
#include <stdio.h>
#include <stdlib.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "testutil.h"

fake_fixture *fake_fixture_new(const char *tag, const fake_key *keys, size_t count) {
  kyso_err err = {0};
  fake_fixture *f = calloc(1, sizeof(*f));
  if (f == NULL || !tu_tmpdir(tag, f->dir)) {
    free(f);
    return NULL;
  }
  snprintf(f->pki, sizeof(f->pki), "%s/pki", f->dir);
  snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
  int ok = tu_pki_init(f->pki) && (f->h = fake_hsm_new()) != NULL;
  for (size_t i = 0; ok && i < count; i++) ok = fake_hsm_add(f->h, keys[i].label, keys[i].type);
  if (!ok || signer_open(f->h, f->certs, &f->s, &err) != KYSO_OK) {
    fprintf(stderr, "fake fixture %s: setup failed %s\n", tag, err.msg);
    fake_fixture_free(f);
    return NULL;
  }
  return f;
}

void fake_fixture_free(fake_fixture *f) {
  if (f == NULL) return;
  signer_close(f->s);
  fake_hsm_free(f->h);
  tu_rmdir(f->dir);
  free(f);
}
