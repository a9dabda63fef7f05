/* kyso tests — helpers shared by the signer tests: a scratch directory, the
 * test PKI (tests/fixtures/pki.sh), and the openssl command line as the
 * independent verifier. */
#ifndef KYSO_TESTS_SIGNER_TESTUTIL_H
#define KYSO_TESTS_SIGNER_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

/* mkdtemp under $TMPDIR (or /tmp); out needs 256 bytes. 0 on failure. */
int tu_tmpdir(const char *tag, char *out);
/* rm -rf of a directory made by tu_tmpdir (kept when KYSO_TEST_KEEP is set). */
void tu_rmdir(const char *dir);
/* Runs a shell command (printf-style); its exit status, -1 if it could not run. */
int tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int tu_write(const char *path, const void *data, size_t len);
/* malloc()ed contents (caller frees), NULL on failure. */
uint8_t *tu_read(const char *path, size_t *len);

/* softhsm.sh DIR LABEL PIN SOPIN, then SOFTHSM2_CONF set to what it prints.
 * 0 on failure. */
int tu_softhsm_token(const char *dir, const char *label, const char *pin, const char *sopin);

/* pki.sh init DIR: root.pem, chain.pem (the sub-CA) … */
int tu_pki_init(const char *dir);
/* Issues a certificate from the sub-CA for a DER request; NULL on failure. */
X509 *tu_pki_issue(const char *dir, const uint8_t *csr, size_t csr_len, const char *profile);
/* DIR/chain.pem as a stack (caller frees with sk_X509_pop_free). */
STACK_OF(X509) *tu_pki_chain(const char *dir);
/* A store trusting DIR/root.pem, any purpose (like `-purpose any`). */
X509_STORE *tu_pki_store(const char *dir);

/* `openssl cms -verify -cades -binary … -CAfile root.pem -purpose any` over
 * sig and doc written to files in dir; the command's exit status. */
int tu_openssl_cms_verify(const char *dir, const uint8_t *sig, size_t sig_len,
                          const uint8_t *doc, size_t doc_len);
/* The same for a document already in the file doc_path. */
int tu_openssl_cms_verify_file(const char *dir, const uint8_t *sig, size_t sig_len,
                               const char *doc_path);
/* `openssl req -verify` of a DER request: 0 when it says "verify OK". */
int tu_openssl_req_verify(const char *dir, const uint8_t *csr, size_t csr_len);

#endif
