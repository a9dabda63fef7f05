/* kysod — kyso.v1.Signer: signs a document with an HSM-held key. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/signer.pb-c.h"

static kyso_status deadline_check(rpc_call *call, const char *when, kyso_err *err) {
  if (rpc_call_remaining_ms(call) > 0) return KYSO_OK;
  return kyso_fail(err, KYSO_DEADLINE_EXCEEDED,
                   "the client's deadline passed %s; nothing was kept", when);
}

void kysod__signer_sign(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st = KYSO_OK;
  size_t len = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__SignRequest *req = NULL;
  uint8_t *sig = NULL, *cert_der = NULL;
  size_t sig_len = 0;
  int cert_len = 0;
  X509 *cert = NULL;
  char label[KYSO_MAX_LABEL + 1], when[32], digest_hex[65];
  uint8_t digest[32];

  req = kyso__v1__sign_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.SignRequest");
    goto out;
  }
  if ((st = kysod__check_sign_request(req, KYSO_MAX_INLINE_DOCUMENT, &err)) != KYSO_OK) goto out;
  if ((st = kysod__key_label(req->key, label, sizeof(label), &err)) != KYSO_OK) goto out;
  if ((st = kysod__require_key(d, label, &cert, &err)) != KYSO_OK) goto out;
  if ((st = deadline_check(call, "before signing", &err)) != KYSO_OK) goto out;

  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  signer_rsa_scheme scheme =
      req->rsa_scheme == KYSO__V1__RSA_SCHEME__RSA_SCHEME_PSS ? SIGNER_RSA_PSS : SIGNER_RSA_PKCS1;
  st = signer_sign_cms(d->signer, label, scheme, req->document.data, req->document.len, now, &sig,
                       &sig_len, &err);
  /* A token that went away: recover it and sign once more (signing has no
   * side effect to repeat). */
  if (st == KYSO_UNAVAILABLE && kysod__recover_hsm(d, &err) == KYSO_OK)
    st = signer_sign_cms(d->signer, label, scheme, req->document.data, req->document.len, now,
                         &sig, &sig_len, &err);
  if (st != KYSO_OK) goto out;
  if (d->test_sign_delay_ms > 0) usleep((useconds_t)d->test_sign_delay_ms * 1000);
  /* A signature the caller no longer waits for is dropped, not half-kept. */
  if ((st = deadline_check(call, "while signing", &err)) != KYSO_OK) goto out;

  SHA256(req->document.data, req->document.len, digest);
  kyso_hex(digest, sizeof(digest), digest_hex);
  cert_len = i2d_X509(cert, &cert_der);
  if (cert_len <= 0) {
    st = kyso_fail(&err, KYSO_INTERNAL, "cannot encode the certificate of '%s'", label);
    goto out;
  }
  Kyso__V1__SignResponse resp = KYSO__V1__SIGN_RESPONSE__INIT;
  resp.signature.data = sig;
  resp.signature.len = sig_len;
  resp.document_sha256 = digest_hex;
  resp.key_label = label;
  resp.certificate.data = cert_der;
  resp.certificate.len = (size_t)cert_len;
  resp.signing_time = when;
  resp.request_id = req->request_id;
  kyso_log(KYSO_LOG_INFO, "sign principal=%s key=%s sha256=%s bytes=%zu request_id=%s",
           rpc_call_peer(call)->principal, label, digest_hex, req->document.len,
           req->request_id);
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) {
    kyso_log(KYSO_LOG_WARN, "sign failed principal=%s: %s", rpc_call_peer(call)->principal,
             err.msg);
    rpc_call_finish(call, st, err.msg, NULL, 0);
  }
  OPENSSL_free(sig);
  OPENSSL_free(cert_der);
  X509_free(cert);
  kyso__v1__sign_request__free_unpacked(req, NULL);
}
