/* kyso — TLS for the server: credentials from PEM files, client certificates
 * requested but left to the auth hook to judge, and the peer's certificate
 * taken from the call's auth context. */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <string.h>

#include "kyso/pem.h"
#include "rpc_internal.h"

kyso_status rpc__server_creds(const rpc_server_opts *o,
                              grpc_server_credentials **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  kyso_buf cert, key, ca;
  kyso_buf_init(&cert, 0);
  kyso_buf_init(&key, 0);
  kyso_buf_init(&ca, 0);
  *out = NULL;
  if (o->tls_cert_file == NULL) {
    if (!o->allow_insecure)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "no TLS certificate configured for '%s' and plaintext is not allowed",
                       o->listen_addr);
    *out = grpc_insecure_server_credentials_create();
    return KYSO_OK;
  }
  if (o->tls_key_file == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "TLS certificate '%s' given without its key file", o->tls_cert_file);
  if ((st = kyso_pem_read(o->tls_cert_file, "TLS certificate chain", &cert, err)) != KYSO_OK ||
      (st = kyso_pem_read(o->tls_key_file, "TLS key", &key, err)) != KYSO_OK ||
      (st = kyso_pem_check_pair(&cert, &key, o->tls_cert_file, o->tls_key_file, err)) != KYSO_OK)
    goto out;
  if (o->client_ca_file != NULL &&
      (st = kyso_pem_read(o->client_ca_file, "client CA list", &ca, err)) != KYSO_OK)
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {(const char *)key.data, (const char *)cert.data};
  /* Ask for a client certificate but let every one through the handshake:
   * the auth hook judges it and can answer UNAUTHENTICATED with a reason,
   * where a TLS rejection would reach the client as a bare UNAVAILABLE. */
  *out = grpc_ssl_server_credentials_create_ex(
      ca.data ? (const char *)ca.data : NULL, &pair, 1,
      ca.data ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY
              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
  if (*out == NULL)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "gRPC refused the TLS credentials from '%s'",
                   o->tls_cert_file);
out:
  kyso_buf_free(&cert, 0);
  kyso_buf_free(&key, 1);
  kyso_buf_free(&ca, 0);
  return st;
}

/* Parsing the PEM costs far more than hashing it (OpenSSL 3 decodes the
 * public key through its providers, under a global lock), so a certificate
 * seen before is taken from the cache by the SHA-256 of its PEM. */
void rpc__peer_load(rpc_peer_cache *cache, grpc_call *call, rpc_peer *peer) {
  BIO *b = NULL;
  X509 *x = NULL;
  unsigned char *der = NULL;
  uint8_t pem_sha256[32];
  unsigned md_len = 0;
  grpc_auth_context *ctx = grpc_call_auth_context(call);
  if (ctx == NULL) goto out;
  grpc_auth_property_iterator it =
      grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
  const grpc_auth_property *prop = grpc_auth_property_iterator_next(&it);
  if (prop == NULL || prop->value == NULL || prop->value_length == 0 ||
      prop->value_length > RPC__MAX_PEM)
    goto out;
  if (cache != NULL) {
    if (EVP_Digest(prop->value, prop->value_length, pem_sha256, &md_len, EVP_sha256(), NULL) != 1)
      goto out;
    if (rpc_peer_cache_get(cache, pem_sha256, &peer->cert, peer->cert_sha256)) goto out;
  }
  b = BIO_new_mem_buf(prop->value, (int)prop->value_length);
  if (b == NULL || (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) goto out;
  int n = i2d_X509(x, &der);
  if (n <= 0 || EVP_Digest(der, (size_t)n, peer->cert_sha256, &md_len, EVP_sha256(), NULL) != 1)
    goto out;
  rpc_peer_cache_put(cache, pem_sha256, x, peer->cert_sha256, X509_get0_notAfter(x));
  peer->cert = x;
  x = NULL;
out:
  ERR_clear_error();
  OPENSSL_free(der);
  X509_free(x);
  BIO_free(b);
  if (ctx != NULL) grpc_auth_context_release(ctx);
}
