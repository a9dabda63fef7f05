/* kyso tests — one key's life through the signer (see flow.h). */
#include "flow.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "testutil.h"

#define CHECK_OK(call)                                                            \
  do {                                                                            \
    kyso_err err_ = {0};                                                          \
    kyso_status st_ = (call);                                                     \
    if (st_ != KYSO_OK) fail_msg("%s: %s: %s", #call, kyso_strerror(st_), err_.msg); \
  } while (0)

void flow_certify(signer *s, const char *label, const char *pki_dir) {
  uint8_t *csr = NULL;
  size_t csr_len = 0;
  kyso_err err = {0};
  kyso_status st = signer_make_csr(s, label, FLOW_SUBJECT, &csr, &csr_len, &err);
  if (st != KYSO_OK) fail_msg("make_csr(%s): %s: %s", label, kyso_strerror(st), err.msg);
  if (tu_openssl_req_verify(pki_dir, csr, csr_len) != 0)
    fail_msg("openssl req -verify rejects the CSR of %s", label);
  csr[csr_len - 3] ^= 0x01; /* in the signature: the check must notice */
  if (tu_openssl_req_verify(pki_dir, csr, csr_len) == 0)
    fail_msg("openssl req -verify accepts a damaged CSR of %s", label);
  csr[csr_len - 3] ^= 0x01;
  X509 *cert = tu_pki_issue(pki_dir, csr, csr_len, "signer");
  OPENSSL_free(csr);
  if (cert == NULL) fail_msg("pki.sh issue failed for %s", label);

  /* A certificate for some other key (the PKI's client key) is refused. */
  char path[512];
  snprintf(path, sizeof(path), "%s/client.pem", pki_dir);
  FILE *f = fopen(path, "r");
  X509 *other = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  assert_non_null(other);
  st = signer_import_certificate(s, label, other, NULL, &err);
  if (st != KYSO_INVALID_ARGUMENT || strstr(err.msg, "does not match key") == NULL)
    fail_msg("importing a foreign certificate for %s: got %s (%s), want INVALID_ARGUMENT",
             label, kyso_strerror(st), err.msg);
  X509_free(other);

  STACK_OF(X509) *chain = tu_pki_chain(pki_dir);
  assert_non_null(chain);
  st = signer_import_certificate(s, label, cert, chain, &err);
  if (st != KYSO_OK) fail_msg("import(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509 *got = NULL;
  STACK_OF(X509) *got_chain = NULL;
  st = signer_certificate(s, label, &got, &got_chain, &err);
  if (st != KYSO_OK) fail_msg("certificate(%s): %s: %s", label, kyso_strerror(st), err.msg);
  assert_int_equal(X509_cmp(got, cert), 0);
  assert_int_equal(sk_X509_num(got_chain), 1);
  X509_free(got);
  sk_X509_pop_free(got_chain, X509_free);
  sk_X509_pop_free(chain, X509_free);
  X509_free(cert);
}

void flow_sign_verify(signer *s, const char *label, signer_rsa_scheme scheme,
                      const char *pki_dir, const uint8_t *doc, size_t doc_len, int cli) {
  uint8_t *sig = NULL;
  size_t sig_len = 0;
  kyso_err err = {0};
  kyso_status st = signer_sign_cms(s, label, scheme, doc, doc_len, 0, &sig, &sig_len, &err);
  if (st != KYSO_OK) fail_msg("sign_cms(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509_STORE *store = tu_pki_store(pki_dir);
  X509 *who = NULL;
  st = signer_verify_cms(store, sig, sig_len, doc, doc_len, &who, &err);
  if (st != KYSO_OK) fail_msg("verify_cms(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509 *mine = NULL;
  CHECK_OK(signer_certificate(s, label, &mine, NULL, &err_));
  assert_int_equal(X509_cmp(who, mine), 0);
  if (cli && tu_openssl_cms_verify(pki_dir, sig, sig_len, doc, doc_len) != 0)
    fail_msg("openssl cms -verify -cades rejects the signature of %s", label);
  X509_free(mine);
  X509_free(who);
  X509_STORE_free(store);
  OPENSSL_free(sig);
}

static CMS_ContentInfo *parse_sig(const char *what, const uint8_t *der, size_t len) {
  const unsigned char *p = der;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  if (cms == NULL || p != der + len) fail_msg("%s: the signature does not parse back", what);
  if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) != 1)
    fail_msg("%s: got %d SignerInfos, want 1", what,
             sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)));
  return cms;
}

static CMS_SignerInfo *signer_info(CMS_ContentInfo *cms) {
  return sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
}

/* got and want byte for byte; a failure names the first difference. */
static void same_bytes(const char *what, const uint8_t *got, size_t got_len,
                       const uint8_t *want, size_t want_len) {
  size_t i = 0;
  while (i < got_len && i < want_len && got[i] == want[i]) i++;
  if (i < got_len || i < want_len)
    fail_msg("%s: got %zu bytes, want %zu; first difference at byte %zu", what, got_len,
             want_len, i);
}

/* The signed attributes of got and want, one by one in encoded order. */
static void same_signed_attrs(const char *what, CMS_SignerInfo *got, CMS_SignerInfo *want) {
  int n = CMS_signed_get_attr_count(got), m = CMS_signed_get_attr_count(want);
  /* content-type, signing-time, message-digest, signing-certificate-v2 */
  if (n != 4 || m != 4) fail_msg("%s: got %d signed attributes, want %d and 4", what, n, m);
  for (int i = 0; i < n; i++) {
    unsigned char *a = NULL, *b = NULL;
    int la = i2d_X509_ATTRIBUTE(CMS_signed_get_attr(got, i), &a);
    int lb = i2d_X509_ATTRIBUTE(CMS_signed_get_attr(want, i), &b);
    const char *name =
        OBJ_nid2ln(OBJ_obj2nid(X509_ATTRIBUTE_get0_object(CMS_signed_get_attr(want, i))));
    char where[400];
    snprintf(where, sizeof(where), "%.200s: signed attribute %d (%.100s)", what, i, name);
    if (la <= 0 || lb <= 0) fail_msg("%s does not encode", where);
    same_bytes(where, a, (size_t)la, b, (size_t)lb);
    OPENSSL_free(a);
    OPENSSL_free(b);
  }
}

/* The DER of cms with its signature value emptied (cms is changed). */
static uint8_t *der_without_value(CMS_ContentInfo *cms, size_t *len) {
  unsigned char *out = NULL;
  if (!ASN1_STRING_set(CMS_SignerInfo_get0_signature(signer_info(cms)), "", 0)) return NULL;
  int n = i2d_CMS_ContentInfo(cms, &out);
  *len = n > 0 ? (size_t)n : 0;
  return n > 0 ? out : NULL;
}

static void message_digest_is(const char *what, CMS_SignerInfo *si, const uint8_t want[32]) {
  ASN1_OCTET_STRING *md = CMS_signed_get0_data_by_OBJ(
      si, OBJ_nid2obj(NID_pkcs9_messageDigest), -3, V_ASN1_OCTET_STRING);
  if (md == NULL) fail_msg("%s: no message-digest attribute", what);
  same_bytes(what, ASN1_STRING_get0_data(md), (size_t)ASN1_STRING_length(md), want, 32);
}

void flow_sign_digest(signer *s, const char *label, signer_rsa_scheme scheme,
                      const char *pki_dir, const uint8_t *doc, size_t doc_len) {
  const time_t when = 1700000000; /* 2023-11-14T22:13:20Z */
  uint8_t sha[32], *dsig = NULL, *bsig = NULL;
  size_t dsig_len = 0, bsig_len = 0;
  unsigned int n = 0;
  char what[256];
  kyso_err err = {0};
  if (EVP_Digest(doc, doc_len, sha, &n, EVP_sha256(), NULL) != 1 || n != sizeof(sha))
    fail_msg("SHA-256 of the test document failed");
  X509_STORE *store = tu_pki_store(pki_dir);
  assert_non_null(store);

  /* Signed now, and at a given time: both verify, by us and by openssl. */
  for (int i = 0; i < 2; i++) {
    time_t t = i == 0 ? 0 : when;
    kyso_status st = signer_sign_cms_digest(s, label, scheme, sha, t, &dsig, &dsig_len, &err);
    if (st != KYSO_OK)
      fail_msg("sign_cms_digest(%s, t=%lld): %s: %s", label, (long long)t, kyso_strerror(st),
               err.msg);
    st = signer_verify_cms(store, dsig, dsig_len, doc, doc_len, NULL, &err);
    if (st != KYSO_OK)
      fail_msg("verify_cms of the digest-path signature (%s, t=%lld): %s: %s", label,
               (long long)t, kyso_strerror(st), err.msg);
    if (tu_openssl_cms_verify(pki_dir, dsig, dsig_len, doc, doc_len) != 0)
      fail_msg("openssl cms -verify -cades rejects the digest-path signature of %s (t=%lld)",
               label, (long long)t);
    if (i == 0) OPENSSL_free(dsig);
  }

  /* The same as the bytes path at the same time, but for the signature value. */
  CHECK_OK(signer_sign_cms(s, label, scheme, doc, doc_len, when, &bsig, &bsig_len, &err_));
  snprintf(what, sizeof(what), "digest path vs bytes path (%s, scheme %d)", label, (int)scheme);
  CMS_ContentInfo *dcms = parse_sig(what, dsig, dsig_len), *bcms = parse_sig(what, bsig, bsig_len);
  same_signed_attrs(what, signer_info(dcms), signer_info(bcms));
  message_digest_is(what, signer_info(dcms), sha);
  X509 *cert = NULL;
  CHECK_OK(signer_certificate(s, label, &cert, NULL, &err_));
  if (scheme == SIGNER_RSA_PKCS1 && EVP_PKEY_is_a(X509_get0_pubkey(cert), "RSA"))
    same_bytes(what, dsig, dsig_len, bsig, bsig_len); /* deterministic: all of it */
  size_t dl = 0, bl = 0;
  uint8_t *d = der_without_value(dcms, &dl), *b = der_without_value(bcms, &bl);
  if (d == NULL || b == NULL) fail_msg("%s: cannot re-encode without the signature value", what);
  same_bytes(what, d, dl, b, bl);
  OPENSSL_free(d);
  OPENSSL_free(b);
  CMS_ContentInfo_free(dcms);
  CMS_ContentInfo_free(bcms);
  OPENSSL_free(dsig);
  OPENSSL_free(bsig);
  X509_free(cert);

  /* A wrong digest makes a signature, over some other document: not doc. */
  sha[5] ^= 0x20;
  CHECK_OK(signer_sign_cms_digest(s, label, scheme, sha, 0, &dsig, &dsig_len, &err_));
  dcms = parse_sig("wrong digest", dsig, dsig_len);
  message_digest_is("wrong digest", signer_info(dcms), sha);
  CMS_ContentInfo_free(dcms);
  kyso_status st = signer_verify_cms(store, dsig, dsig_len, doc, doc_len, NULL, &err);
  if (st != KYSO_FAILED_PRECONDITION || strstr(err.msg, "message digest differs") == NULL)
    fail_msg("verify of a wrong-digest signature (%s): got %s (%s), want FAILED_PRECONDITION "
             "(message digest differs)", label, kyso_strerror(st), err.msg);
  if (tu_openssl_cms_verify(pki_dir, dsig, dsig_len, doc, doc_len) == 0)
    fail_msg("openssl cms -verify accepts a wrong-digest signature (%s)", label);
  OPENSSL_free(dsig);
  X509_STORE_free(store);
}

void flow_run(signer *s, const char *label, signer_rsa_scheme scheme, const char *pki_dir) {
  static const char text[] = "Quyết định số 123/QĐ-UBND về việc ký số văn bản đi.\n";
  uint8_t *sig = NULL;
  size_t sig_len = 0;
  kyso_err err = {0};
  flow_certify(s, label, pki_dir);
  flow_sign_verify(s, label, scheme, pki_dir, (const uint8_t *)text, sizeof(text) - 1, 1);
  flow_sign_digest(s, label, scheme, pki_dir, (const uint8_t *)text, sizeof(text) - 1);

  /* A flipped document byte fails both verifiers. */
  uint8_t doc[sizeof(text) - 1];
  memcpy(doc, text, sizeof(doc));
  CHECK_OK(signer_sign_cms(s, label, scheme, doc, sizeof(doc), 0, &sig, &sig_len, &err_));
  doc[7] ^= 0x01;
  X509_STORE *store = tu_pki_store(pki_dir);
  X509 *who = (X509 *)1;
  kyso_status st = signer_verify_cms(store, sig, sig_len, doc, sizeof(doc), &who, &err);
  if (st != KYSO_FAILED_PRECONDITION)
    fail_msg("verify of a flipped document (%s): got %s (%s), want FAILED_PRECONDITION", label,
             kyso_strerror(st), err.msg);
  assert_null(who);
  if (tu_openssl_cms_verify(pki_dir, sig, sig_len, doc, sizeof(doc)) == 0)
    fail_msg("openssl cms -verify accepts a flipped document (%s)", label);
  X509_STORE_free(store);
  OPENSSL_free(sig);
}
