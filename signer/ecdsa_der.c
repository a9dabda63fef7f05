/* kyso — ECDSA signature encodings. PKCS#11 CKM_ECDSA returns r||s, each
 * half as wide as the group order with leading zero bytes kept; CMS and
 * X.509 want ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }, where
 * each INTEGER is minimal (leading zeros dropped) and gets a 0x00 in front
 * when its top bit is set. BIGNUM + i2d_ECDSA_SIG get both rules right. */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/proverr.h>

#include "signer_internal.h"

/* Bytes of a DER length field for a content of n bytes. */
static int der_len_len(int n) { return n < 0x80 ? 1 : n < 0x100 ? 2 : 3; }

int signer__ecdsa_der_max(int order_bits) {
  /* r, s < order < 2^order_bits: a positive INTEGER of at most
   * order_bits + 1 bits (the sign bit), i.e. order_bits / 8 + 1 bytes. */
  int half = order_bits / 8 + 1;
  int integer = 1 + der_len_len(half) + half;
  int content = 2 * integer;
  return 1 + der_len_len(content) + content;
}

int signer__ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der,
                             size_t cap, size_t *der_len) {
  int ok = 0;
  BIGNUM *r = NULL, *s = NULL;
  ECDSA_SIG *sig = NULL;
  size_t half = raw_len / 2;
  if (raw == NULL || raw_len == 0 || raw_len % 2 != 0 || raw_len > KYSO_MAX_SIGNATURE) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_FAILED_TO_SIGN,
                   "kysohsm: the HSM returned a %zu-byte ECDSA signature; r||s expected",
                   raw_len);
    goto out;
  }
  if ((r = BN_bin2bn(raw, (int)half, NULL)) == NULL ||
      (s = BN_bin2bn(raw + half, (int)half, NULL)) == NULL ||
      (sig = ECDSA_SIG_new()) == NULL)
    goto out;
  if (BN_is_zero(r) || BN_is_zero(s)) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_FAILED_TO_SIGN,
                   "kysohsm: the HSM returned an ECDSA signature with r or s zero");
    goto out;
  }
  if (!ECDSA_SIG_set0(sig, r, s)) goto out;
  r = s = NULL; /* sig owns them now */
  int n = i2d_ECDSA_SIG(sig, NULL);
  if (n <= 0) goto out;
  if (der == NULL || (size_t)n > cap) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_OUTPUT_BUFFER_TOO_SMALL,
                   "kysohsm: a %d-byte ECDSA signature does not fit %zu bytes", n, cap);
    goto out;
  }
  unsigned char *p = der;
  if (i2d_ECDSA_SIG(sig, &p) != n) goto out;
  *der_len = (size_t)n;
  ok = 1;
out:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(sig);
  return ok;
}
