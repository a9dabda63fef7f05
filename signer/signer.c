/* kyso — the signer handle: a private OpenSSL library context with the
 * default and kysohsm providers, the certificate store, and a cache of
 * kysohsm keys by label. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/provider.h>

#include "signer_internal.h"

kyso_status signer__label_check(const char *label, kyso_err *err) {
  if (label == NULL || label[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a key label is required");
  size_t n = strnlen(label, KYSO_MAX_LABEL + 1);
  if (n > KYSO_MAX_LABEL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "key label '%.32s...' is longer than %d bytes",
                     label, KYSO_MAX_LABEL);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)label[i] < 0x20 || (unsigned char)label[i] > 0x7e)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "key label has a byte outside printable ASCII at offset %zu", i);
  return KYSO_OK;
}

kyso_status signer__openssl_failure(kyso_err *err, const char *what, const char *label) {
  kyso_err hsm_err;
  if (signer__hsm_error_take(&hsm_err)) {
    ERR_clear_error();
    kyso_fail(err, hsm_err.code, "%s", hsm_err.msg);
    kyso_err_wrap(err, "%s with key '%s'", what, label);
    return hsm_err.code;
  }
  kyso_fail(err, KYSO_INTERNAL, "%s with key '%s' failed:", what, label);
  return kyso_err_add_openssl(err);
}

static void pkey_free(void *p) { EVP_PKEY_free(p); }

kyso_status signer_open(hsm *h, const char *cert_dir, signer **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  signer *s = NULL;
  if (out == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_open: out is required");
  *out = NULL;
  if (h == NULL || cert_dir == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_open: hsm and cert_dir are required");
  if ((s = calloc(1, sizeof(*s))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the signer");
  s->hsm = h;
  pthread_mutex_init(&s->keys_mu, NULL);
  if ((st = signer__map_new(pkey_free, &s->keys, err)) != KYSO_OK) goto out;
  if ((s->libctx = OSSL_LIB_CTX_new()) == NULL ||
      (s->prov_default = OSSL_PROVIDER_load(s->libctx, "default")) == NULL ||
      (s->sha256 = EVP_MD_fetch(s->libctx, "SHA2-256", NULL)) == NULL) {
    kyso_fail(err, KYSO_INTERNAL, "cannot set up OpenSSL's default provider for signing");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  if ((st = signer__provider_load(s->libctx, h, s->sha256, &s->prov_kyso, err)) != KYSO_OK)
    goto out;
  if (!EVP_set_default_properties(s->libctx, SIGNER__PREFER)) {
    kyso_fail(err, KYSO_INTERNAL, "cannot make %s the preferred provider",
              SIGNER__PROVIDER_NAME);
    st = kyso_err_add_openssl(err);
    goto out;
  }
  if ((st = signer__certstore_open(cert_dir, &s->certs, err)) != KYSO_OK) goto out;
  *out = s;
  s = NULL;
out:
  signer_close(s);
  return st;
}

/* Keys (which hold references into the library context) go first, the
 * context last. Keys handed out by signer_private_key must be freed before. */
void signer_close(signer *s) {
  if (s == NULL) return;
  signer__map_free(s->keys);
  signer__certstore_close(s->certs);
  EVP_MD_free(s->sha256);
  if (s->prov_kyso != NULL) OSSL_PROVIDER_unload(s->prov_kyso);
  if (s->prov_default != NULL) OSSL_PROVIDER_unload(s->prov_default);
  OSSL_LIB_CTX_free(s->libctx);
  pthread_mutex_destroy(&s->keys_mu);
  free(s);
}

/* Built outside the lock (it asks the HSM); if two threads race, the first
 * key cached wins and the other is dropped: both stand for the same key. */
kyso_status signer__key_get(signer *s, const char *label, EVP_PKEY **out, kyso_err *err) {
  kyso_status st;
  EVP_PKEY *k = NULL;
  *out = NULL;
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  pthread_mutex_lock(&s->keys_mu);
  if ((*out = signer__map_get(s->keys, label)) != NULL) EVP_PKEY_up_ref(*out);
  pthread_mutex_unlock(&s->keys_mu);
  if (*out != NULL) return KYSO_OK;
  if ((st = signer__provider_key(s->libctx, s->hsm, label, &k, err)) != KYSO_OK) return st;
  pthread_mutex_lock(&s->keys_mu);
  EVP_PKEY *cached = signer__map_get(s->keys, label);
  if (cached != NULL) {
    EVP_PKEY_up_ref(cached);
    *out = cached;
  } else if ((st = signer__map_put(s->keys, label, k, err)) == KYSO_OK) {
    EVP_PKEY_up_ref(k);
    *out = k;
    k = NULL;
  }
  pthread_mutex_unlock(&s->keys_mu);
  EVP_PKEY_free(k);
  return st;
}

kyso_status signer_private_key(signer *s, const char *label, EVP_PKEY **out, kyso_err *err) {
  if (s == NULL || out == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_private_key: signer and out are required");
  return signer__key_get(s, label, out, err);
}

kyso_status signer_certificate(signer *s, const char *label, X509 **cert_out,
                               STACK_OF(X509) **chain_out, kyso_err *err) {
  kyso_status st;
  if (s == NULL || cert_out == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_certificate: signer and cert_out are required");
  *cert_out = NULL;
  if (chain_out != NULL) *chain_out = NULL;
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  return signer__certstore_get(s->certs, label, cert_out, chain_out, err);
}

/* The subject in RFC 2253 order with UTF-8 kept, for messages. */
static void subject_text(X509 *cert, char *buf, size_t n) {
  BIO *b = BIO_new(BIO_s_mem());
  char *data = NULL;
  long len;
  snprintf(buf, n, "(no subject)");
  if (b != NULL &&
      X509_NAME_print_ex(b, X509_get_subject_name(cert), 0,
                         XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
      (len = BIO_get_mem_data(b, &data)) > 0)
    snprintf(buf, n, "%.*s", (int)(len < 200 ? len : 200), data);
  BIO_free(b);
}

kyso_status signer_import_certificate(signer *s, const char *label, X509 *cert,
                                      STACK_OF(X509) *chain, kyso_err *err) {
  kyso_status st;
  EVP_PKEY *pub = NULL;
  char subj[256];
  if (s == NULL || cert == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_import_certificate: signer and certificate are required");
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm_public_key(s->hsm, label, &pub, err)) != KYSO_OK) goto out;
  EVP_PKEY *cert_key = X509_get0_pubkey(cert);
  if (cert_key == NULL || EVP_PKEY_eq(cert_key, pub) != 1) {
    ERR_clear_error();
    subject_text(cert, subj, sizeof(subj));
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "certificate for '%s' does not match key '%s'",
                   subj, label);
    goto out;
  }
  st = signer__certstore_put(s->certs, label, cert, chain, err);
out:
  EVP_PKEY_free(pub);
  return st;
}
