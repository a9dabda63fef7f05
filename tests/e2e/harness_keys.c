/* kyso end-to-end harness: provisioning keys over the API, Signer.Sign, and
 * looking inside what it returns. */
#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kyso/v1/keys.pb-c.h"

void e2e_key_ref(Kyso__V1__KeyRef *ref, Kyso__V1__KeyRole role, const char *name) {
  kyso__v1__key_ref__init(ref);
  ref->role = role;
  if (role == KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL) {
    ref->unit = (char *)name;
    ref->account = "van.thu";
  } else {
    ref->account = (char *)name;
  }
}

int e2e_generate_key(e2e *e, Kyso__V1__KeyRole role, const char *name,
                     Kyso__V1__KeyAlgorithm alg) {
  Kyso__V1__GenerateKeyRequest req = KYSO__V1__GENERATE_KEY_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__KeyInfo *info = NULL;
  char msg[512];
  e2e_key_ref(&ref, role, name);
  req.key = &ref;
  req.algorithm = alg;
  int st = e2e_call(e, E2E_OPS, "/kyso.v1.Keys/Generate", &req.base,
                    &kyso__v1__key_info__descriptor, 60000, (ProtobufCMessage **)&info, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("Keys.Generate(%s): got status %d (%s), want OK", name, st, msg);
  if (!info->sensitive || info->algorithm != alg || info->public_key.len == 0)
    E2E_FAIL("Keys.Generate(%s): got sensitive=%d algorithm=%d public_key=%zu bytes, want "
             "1/%d/>0", name, info->sensitive, info->algorithm, info->public_key.len, alg);
  kyso__v1__key_info__free_unpacked(info, NULL);
  return 0;
}

int e2e_key_ready(e2e *e, Kyso__V1__KeyRole role, const char *name) {
  Kyso__V1__ListKeysRequest req = KYSO__V1__LIST_KEYS_REQUEST__INIT;
  Kyso__V1__ListKeysResponse *resp = NULL;
  char msg[512], label[160];
  snprintf(label, sizeof(label), "kyso/%s/%s",
           role == KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL  ? "seal"
           : role == KYSO__V1__KEY_ROLE__KEY_ROLE_TSA ? "tsa"
                                                      : "personal",
           name);
  req.page_size = 1000;
  int st = e2e_call(e, E2E_OPS, "/kyso.v1.Keys/List", &req.base,
                    &kyso__v1__list_keys_response__descriptor, 10000,
                    (ProtobufCMessage **)&resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Keys.List: got status %d (%s), want OK", st, msg);
  int ready = 0;
  for (size_t i = 0; i < resp->n_keys; i++)
    if (strcmp(resp->keys[i]->label, label) == 0 && resp->keys[i]->has_certificate) ready = 1;
  kyso__v1__list_keys_response__free_unpacked(resp, NULL);
  return ready;
}

/* PEM certificate file -> DER (malloc()ed). */
static uint8_t *pem_to_der(const char *path, size_t *len) {
  FILE *f = fopen(path, "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  unsigned char *der = NULL;
  int n = x ? i2d_X509(x, &der) : -1;
  uint8_t *copy = n > 0 ? malloc((size_t)n) : NULL;
  if (copy) memcpy(copy, der, (size_t)n), *len = (size_t)n;
  OPENSSL_free(der);
  X509_free(x);
  if (f) fclose(f);
  return copy;
}

int e2e_provision_key(e2e *e, Kyso__V1__KeyRole role, const char *name,
                      Kyso__V1__KeyAlgorithm alg) {
  int seal = role == KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
  int tsa = role == KYSO__V1__KEY_ROLE__KEY_ROLE_TSA;
  Kyso__V1__KeyRef ref;
  char msg[512], subject[256];
  e2e_generate_key(e, role, name, alg);
  e2e_key_ref(&ref, role, name);

  Kyso__V1__CreateCsrRequest creq = KYSO__V1__CREATE_CSR_REQUEST__INIT;
  Kyso__V1__CreateCsrResponse *cresp = NULL;
  snprintf(subject, sizeof(subject), "/C=VN/O=Kyso E2E/OU=%s/CN=%s",
           seal ? "Seal" : tsa ? "TSA" : "Personal", name);
  creq.key = &ref;
  creq.subject = subject;
  int st = e2e_call(e, E2E_OPS, "/kyso.v1.Keys/CreateCsr", &creq.base,
                    &kyso__v1__create_csr_response__descriptor, 30000,
                    (ProtobufCMessage **)&cresp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Keys.CreateCsr(%s): got status %d (%s), want OK", name, st, msg);
  const char *csr = e2e_path(e, "work/%s.csr.der", name);
  const char *pem = e2e_path(e, "work/%s.pem", name);
  const char *log = e2e_path(e, "work/%s.issue.log", name);
  e2e_write_file(csr, cresp->csr.data, cresp->csr.len);
  kyso__v1__create_csr_response__free_unpacked(cresp, NULL);
  if (e2e_sh(log, "'%s/pki.sh' issue '%s' '%s' '%s' %s", e2e_fixtures_dir(), e->pki, csr, pem,
             seal ? "seal" : tsa ? "tsa" : "signer") != 0) {
    e2e_sh(NULL, "cat '%s' >&2", log);
    E2E_FAIL("pki.sh issue of %s's CSR failed (is the CSR valid?)", name);
  }

  size_t der_len = 0, chain_len = 0;
  uint8_t *der = pem_to_der(pem, &der_len); /* leaf as DER, chain as PEM: both forms */
  uint8_t *chain = e2e_read_file(e2e_path(e, "pki/chain.pem"), &chain_len);
  if (der == NULL || chain == NULL) E2E_FAIL("cannot read %s or chain.pem", pem);
  ProtobufCBinaryData chain_item = {.data = chain, .len = chain_len};
  Kyso__V1__ImportCertificateRequest ireq = KYSO__V1__IMPORT_CERTIFICATE_REQUEST__INIT;
  Kyso__V1__KeyInfo *info = NULL;
  ireq.key = &ref;
  ireq.certificate.data = der;
  ireq.certificate.len = der_len;
  ireq.chain = &chain_item;
  ireq.n_chain = 1;
  st = e2e_call(e, E2E_OPS, "/kyso.v1.Keys/ImportCertificate", &ireq.base,
                &kyso__v1__key_info__descriptor, 30000, (ProtobufCMessage **)&info, msg,
                sizeof(msg));
  free(der);
  free(chain);
  if (st != 0) E2E_FAIL("Keys.ImportCertificate(%s): got status %d (%s), want OK", name, st, msg);
  if (!info->has_certificate) E2E_FAIL("Keys.ImportCertificate(%s): has_certificate false", name);
  kyso__v1__key_info__free_unpacked(info, NULL);
  return 0;
}

int e2e_sign(e2e *e, e2e_ident who, Kyso__V1__KeyRole role, const char *name, int rsa_scheme,
             const uint8_t *doc, size_t len, const char *request_id, int64_t timeout_ms,
             Kyso__V1__SignResponse **resp, char *msg, size_t msg_size) {
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  e2e_key_ref(&ref, role, name);
  meta.unit = "H37.DN.001";
  meta.number_notation = "123/UBND-VP";
  meta.title = "Về việc thử nghiệm ký số đầu cuối";
  meta.issue_date = "2024-05-17";
  meta.media_type = "application/octet-stream";
  meta.document_type = "công văn";
  req.document.data = (uint8_t *)doc;
  req.document.len = len;
  req.key = &ref;
  req.rsa_scheme = (Kyso__V1__RsaScheme)rsa_scheme;
  req.metadata = &meta;
  req.request_id = (char *)(request_id ? request_id : "");
  return e2e_call(e, who, "/kyso.v1.Signer/Sign", &req.base,
                  &kyso__v1__sign_response__descriptor, timeout_ms, (ProtobufCMessage **)resp,
                  msg, msg_size);
}

void e2e_cms_inspect(const uint8_t *der, size_t len, e2e_cms_info *out) {
  const unsigned char *p = der;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  memset(out, 0, sizeof(*out));
  if (cms == NULL || p != der + len)
    E2E_FAIL("signature (%zu bytes) is not one DER CMS ContentInfo", len);
  STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
  if (sis == NULL || sk_CMS_SignerInfo_num(sis) != 1) {
    CMS_ContentInfo_free(cms);
    E2E_FAIL("CMS: got %d SignerInfos, want 1", sis ? sk_CMS_SignerInfo_num(sis) : -1);
  }
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, 0);
  X509_ALGOR *alg = NULL;
  const ASN1_OBJECT *obj = NULL;
  CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &alg);
  X509_ALGOR_get0(&obj, NULL, NULL, alg);
  out->sig_nid = OBJ_obj2nid(obj);
  if (out->sig_nid == NID_ecdsa_with_SHA256 || out->sig_nid == NID_X9_62_id_ecPublicKey) {
    ASN1_OCTET_STRING *os = CMS_SignerInfo_get0_signature(si);
    const unsigned char *q = ASN1_STRING_get0_data(os), *start = q;
    int n = ASN1_STRING_length(os);
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, n);
    if (es != NULL) {
      const BIGNUM *r, *s;
      unsigned char *re = NULL;
      ECDSA_SIG_get0(es, &r, &s);
      out->ec_r_len = BN_num_bytes(r);
      out->ec_s_len = BN_num_bytes(s);
      out->ec_high_bit = (BN_num_bits(r) % 8 == 0) || (BN_num_bits(s) % 8 == 0);
      int m = i2d_ECDSA_SIG(es, &re);
      out->ec_der_canonical = q == start + n && m == n && memcmp(re, start, (size_t)n) == 0;
      OPENSSL_free(re);
      ECDSA_SIG_free(es);
    }
  }
  CMS_ContentInfo_free(cms);
}

uint8_t *e2e_cert_spki(const uint8_t *cert, size_t cert_len, size_t *spki_len) {
  const unsigned char *p = cert;
  X509 *x = d2i_X509(NULL, &p, (long)cert_len);
  unsigned char *der = NULL;
  int n = x ? i2d_PUBKEY(X509_get0_pubkey(x), &der) : -1;
  uint8_t *copy = n > 0 ? malloc((size_t)n) : NULL;
  if (copy) memcpy(copy, der, (size_t)n), *spki_len = (size_t)n;
  OPENSSL_free(der);
  X509_free(x);
  return copy;
}
