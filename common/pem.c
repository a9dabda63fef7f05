/* kyso — reading PEM files and checking certificate/key pairs. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kyso/pem.h"

kyso_status kyso_pem_read(const char *path, const char *what, kyso_buf *out, kyso_err *err) {
  kyso_status st = kyso_read_file(path, KYSO_MAX_PEM, out, err);
  if (st == KYSO_OK) st = kyso_buf_append(out, "", 1, path, err);
  if (st != KYSO_OK) {
    kyso_buf_free(out, 1);
    kyso_err_wrap(err, "reading the %s", what);
  }
  return st;
}

kyso_status kyso_pem_check_pair(const kyso_buf *cert_pem, const kyso_buf *key_pem,
                                const char *cert_path, const char *key_path, kyso_err *err) {
  kyso_status st = KYSO_OK;
  X509 *x = NULL;
  EVP_PKEY *pk = NULL;
  BIO *cb = BIO_new_mem_buf(cert_pem->data, (int)(cert_pem->len - 1));
  BIO *kb = BIO_new_mem_buf(key_pem->data, (int)(key_pem->len - 1));
  if (cb == NULL || (x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) == NULL)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "'%s' holds no PEM certificate", cert_path);
  else if (kb == NULL || (pk = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL)) == NULL)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "'%s' holds no unencrypted PEM private key",
                   key_path);
  else if (X509_check_private_key(x, pk) != 1)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "key '%s' does not belong to the certificate in '%s'",
                   key_path, cert_path);
  ERR_clear_error();
  BIO_free(cb);
  BIO_free(kb);
  X509_free(x);
  EVP_PKEY_free(pk);
  return st;
}
