/* kyso tests — the whole life of one signing key, shared by the fake-HSM
 * and the SoftHSM tests: CSR → `openssl req -verify` → certificate from the
 * test sub-CA → import (a certificate for another key is refused) → CMS
 * signature → verified by `openssl cms -verify -cades` and by
 * signer_verify_cms → a flipped document byte fails both; and the same
 * from the document's SHA-256 alone (signer_sign_cms_digest). */
#ifndef KYSO_TESTS_SIGNER_FLOW_H
#define KYSO_TESTS_SIGNER_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/signer.h"

/* Vietnamese subject used for every test certificate. */
#define FLOW_SUBJECT "/C=VN/ST=Đồng Nai/O=UBND tỉnh Đồng Nai/OU=Văn phòng/CN=Nguyễn Thị Minh Khai"

/* Makes a CSR for label, has pki_dir's sub-CA issue it, imports it with the
 * chain. Fails the running test on any error. */
void flow_certify(signer *s, const char *label, const char *pki_dir);
/* flow_certify, then signs and checks as described above. */
void flow_run(signer *s, const char *label, signer_rsa_scheme scheme, const char *pki_dir);
/* Signs doc and checks it with signer_verify_cms (and, if cli, openssl). */
void flow_sign_verify(signer *s, const char *label, signer_rsa_scheme scheme,
                      const char *pki_dir, const uint8_t *doc, size_t doc_len, int cli);
/* Signs doc's SHA-256 with signer_sign_cms_digest: the signature verifies
 * (signer_verify_cms and openssl, over doc); at one signing time its DER is
 * signer_sign_cms's but for the signature value (all of it for RSA PKCS#1
 * v1.5, which is deterministic); over a wrong digest both verifiers fail. */
void flow_sign_digest(signer *s, const char *label, signer_rsa_scheme scheme,
                      const char *pki_dir, const uint8_t *doc, size_t doc_len);

#endif
