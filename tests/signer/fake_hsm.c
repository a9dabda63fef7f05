/* kyso tests — the fake HSM (see fake_hsm.h). */
#include "fake_hsm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define MAX_KEYS 32

typedef struct fake_key {
  char label[KYSO_MAX_LABEL + 1];
  hsm_key_type type;
  EVP_PKEY *priv;
} fake_key;

struct hsm {
  pthread_mutex_t mu;
  fake_key keys[MAX_KEYS];
  int n;
  kyso_status fail_code;
  int fail_left;
  long signs;
};

hsm *fake_hsm_new(void) {
  hsm *h = calloc(1, sizeof(*h));
  if (h != NULL) pthread_mutex_init(&h->mu, NULL);
  return h;
}

void fake_hsm_free(hsm *h) {
  if (h == NULL) return;
  for (int i = 0; i < h->n; i++) EVP_PKEY_free(h->keys[i].priv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

int fake_hsm_add(hsm *h, const char *label, hsm_key_type type) {
  EVP_PKEY *k = type == HSM_KEY_EC_P256 ? EVP_EC_gen("P-256")
                : type == HSM_KEY_RSA_3072 ? EVP_RSA_gen(3072)
                                           : EVP_RSA_gen(2048);
  if (k == NULL || h->n == MAX_KEYS) {
    EVP_PKEY_free(k);
    return 0;
  }
  fake_key *fk = &h->keys[h->n++];
  snprintf(fk->label, sizeof(fk->label), "%s", label);
  fk->type = type;
  fk->priv = k;
  return 1;
}

static fake_key *find(hsm *h, const char *label) {
  for (int i = 0; label != NULL && i < h->n; i++)
    if (strcmp(h->keys[i].label, label) == 0) return &h->keys[i];
  return NULL;
}

EVP_PKEY *fake_hsm_private(hsm *h, const char *label) {
  fake_key *k = find(h, label);
  return k != NULL ? k->priv : NULL;
}

void fake_hsm_fail_signs(hsm *h, kyso_status code, int n) {
  pthread_mutex_lock(&h->mu);
  h->fail_code = code;
  h->fail_left = n;
  pthread_mutex_unlock(&h->mu);
}

long fake_hsm_sign_count(hsm *h) {
  pthread_mutex_lock(&h->mu);
  long n = h->signs;
  pthread_mutex_unlock(&h->mu);
  return n;
}

const char *hsm_key_type_name(hsm_key_type type) {
  return type == HSM_KEY_EC_P256 ? "EC P-256" : type == HSM_KEY_RSA_3072 ? "RSA-3072" : "RSA-2048";
}

kyso_status hsm_key_info_get(hsm *h, const char *label, hsm_key_info *out, kyso_err *err) {
  fake_key *k = find(h, label);
  if (k == NULL) return kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found in fake token", label);
  memset(out, 0, sizeof(*out));
  snprintf(out->label, sizeof(out->label), "%s", k->label);
  out->type = k->type;
  out->sensitive = 1;
  return KYSO_OK;
}

kyso_status hsm_public_key(hsm *h, const char *label, EVP_PKEY **out, kyso_err *err) {
  fake_key *k = find(h, label);
  unsigned char *der = NULL;
  *out = NULL;
  if (k == NULL) return kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found in fake token", label);
  int n = i2d_PUBKEY(k->priv, &der);
  const unsigned char *p = der;
  if (n > 0) *out = d2i_PUBKEY(NULL, &p, n);
  OPENSSL_free(der);
  return *out != NULL ? KYSO_OK : kyso_fail(err, KYSO_INTERNAL, "fake public key failed");
}

/* DER ECDSA -> r||s, each half 32 bytes with leading zeros kept. */
static int der_to_raw(const unsigned char *der, size_t len, uint8_t *raw) {
  ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &der, (long)len);
  int ok = s != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(s), raw, 32) == 32 &&
           BN_bn2binpad(ECDSA_SIG_get0_s(s), raw + 32, 32) == 32;
  ECDSA_SIG_free(s);
  return ok;
}

kyso_status hsm_sign_digest(hsm *h, const char *label, hsm_mech mech, const uint8_t *digest,
                            size_t digest_len, uint8_t *sig, size_t *sig_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  unsigned char buf[KYSO_MAX_SIGNATURE];
  size_t n = sizeof(buf);
  fake_key *k = find(h, label);
  EVP_PKEY_CTX *ctx = NULL;
  pthread_mutex_lock(&h->mu);
  h->signs++;
  int fail = h->fail_left > 0 ? (h->fail_left--, 1) : 0;
  pthread_mutex_unlock(&h->mu);
  if (fail) return kyso_fail(err, h->fail_code, "fake token refused to sign with '%s'", label);
  if (k == NULL) return kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found in fake token", label);
  if (digest_len != 32) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "digest is not 32 bytes");
  int ec = k->type == HSM_KEY_EC_P256;
  if (ec != (mech == HSM_MECH_ECDSA_SHA256))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "mechanism does not fit key '%s'", label);
  if ((ctx = EVP_PKEY_CTX_new(k->priv, NULL)) == NULL || EVP_PKEY_sign_init(ctx) <= 0 ||
      EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0 ||
      (mech == HSM_MECH_RSA_PSS_SHA256 &&
       (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) <= 0)) ||
      EVP_PKEY_sign(ctx, buf, &n, digest, digest_len) <= 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "fake sign failed");
    goto out;
  }
  if (ec) {
    if (*sig_len < 64 || !der_to_raw(buf, n, sig)) {
      st = kyso_fail(err, KYSO_INTERNAL, "fake ECDSA conversion failed");
      goto out;
    }
    *sig_len = 64;
  } else {
    if (*sig_len < n) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "buffer too small");
      goto out;
    }
    memcpy(sig, buf, n);
    *sig_len = n;
  }
out:
  EVP_PKEY_CTX_free(ctx);
  return st;
}
