/* kyso — the certificate store: one PEM file per key label under a
 * directory (the leaf first, then its chain), written atomically and
 * durably, and cached in memory because every Sign reads it. Chain
 * certificates are shared: 12,000 officials of one province have the same
 * two CA certificates above them, so each distinct one is parsed and held
 * once (by the SHA-256 of its DER), not once per key. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "kyso/util.h"
#include "signer_internal.h"

/* A stored file holds at most 1 + KYSO_MAX_CERT_CHAIN certificates of at
 * most KYSO_MAX_CERT_DER bytes each; PEM's base64 and lines add about 37 %. */
#define MAX_FILE ((KYSO_MAX_CERT_CHAIN + 1) * 2 * KYSO_MAX_CERT_DER)

typedef struct cached {
  X509 *cert;
  STACK_OF(X509) *chain; /* never NULL, may be empty */
} cached;

struct signer__certstore {
  char dir[PATH_MAX - SIGNER__FILE_NAME_MAX - 32];
  pthread_mutex_t mu; /* the maps, and file writes; never held while parsing */
  signer__map *cache; /* label -> cached */
  signer__map *shared; /* hex SHA-256 of a chain certificate's DER -> X509 */
};

static void x509_free(void *p) { X509_free(p); }

static void cached_free(void *p) {
  cached *c = p;
  if (c == NULL) return;
  X509_free(c->cert);
  sk_X509_pop_free(c->chain, X509_free);
  free(c);
}

static int plain(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_' || ch == '.';
}

kyso_status signer__cert_file_name(const char *label, char *out, kyso_err *err) {
  static const char suffix[] = ".pem";
  kyso_status st;
  size_t n = 0;
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  for (size_t i = 0; label[i] != '\0'; i++) {
    unsigned char ch = (unsigned char)label[i];
    if (n + 3 + sizeof(suffix) - 1 > SIGNER__FILE_NAME_MAX) goto hashed;
    if (plain(ch) && !(i == 0 && ch == '.'))
      out[n++] = (char)ch;
    else
      n += (size_t)snprintf(out + n, 4, "%%%02X", ch);
  }
  memcpy(out + n, suffix, sizeof(suffix));
  return KYSO_OK;
hashed:; /* '~' never comes out of the encoding above, so no name collides */
  uint8_t md[32];
  unsigned int md_len = 0;
  if (!EVP_Digest(label, strlen(label), md, &md_len, EVP_sha256(), NULL)) {
    kyso_fail(err, KYSO_INTERNAL, "cannot hash label '%s'", label);
    return kyso_err_add_openssl(err);
  }
  out[0] = '~';
  kyso_hex(md, sizeof(md), out + 1);
  memcpy(out + 1 + 2 * sizeof(md), suffix, sizeof(suffix));
  return KYSO_OK;
}

kyso_status signer__certstore_open(const char *dir, signer__certstore **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  struct stat sb;
  signer__certstore *cs = NULL;
  *out = NULL;
  if (dir == NULL || dir[0] == '\0' ||
      strlen(dir) >= sizeof(cs->dir))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "certificate directory name is empty or too long");
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create certificate directory '%s': %s",
                     dir, strerror(errno));
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "certificate directory '%s' is not a directory",
                     dir);
  if ((cs = calloc(1, sizeof(*cs))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the certificate store");
  snprintf(cs->dir, sizeof(cs->dir), "%s", dir);
  pthread_mutex_init(&cs->mu, NULL);
  if ((st = signer__map_new(cached_free, &cs->cache, err)) != KYSO_OK ||
      (st = signer__map_new(x509_free, &cs->shared, err)) != KYSO_OK) {
    signer__certstore_close(cs);
    return st;
  }
  *out = cs;
  return st;
}

void signer__certstore_close(signer__certstore *cs) {
  if (cs == NULL) return;
  signer__map_free(cs->cache);
  signer__map_free(cs->shared);
  pthread_mutex_destroy(&cs->mu);
  free(cs);
}

static kyso_status file_path(const signer__certstore *cs, const char *label, char *path,
                             kyso_err *err) {
  char name[SIGNER__FILE_NAME_MAX + 1];
  kyso_status st = signer__cert_file_name(label, name, err);
  if (st == KYSO_OK && snprintf(path, PATH_MAX, "%s/%s", cs->dir, name) >= PATH_MAX)
    st = kyso_fail(err, KYSO_INTERNAL, "certificate path for '%s' is too long", label);
  return st;
}

/* The chain certificate with this DER: the shared one when it was seen
 * before, else parsed and shared from now on. NULL when der is not a
 * certificate. Takes mu briefly; the parse runs outside it. */
static X509 *shared_cert(signer__certstore *cs, const unsigned char *der, long len) {
  uint8_t md[32];
  char hex[65];
  unsigned md_len = 0;
  X509 *x = NULL, *known;
  if (!EVP_Digest(der, (size_t)len, md, &md_len, EVP_sha256(), NULL)) return NULL;
  kyso_hex(md, sizeof(md), hex);
  pthread_mutex_lock(&cs->mu);
  if ((known = signer__map_get(cs->shared, hex)) != NULL) X509_up_ref(known);
  pthread_mutex_unlock(&cs->mu);
  if (known != NULL) return known;
  const unsigned char *p = der;
  if ((x = d2i_X509(NULL, &p, len)) == NULL || p != der + len) {
    X509_free(x);
    return NULL;
  }
  kyso_err ignored;
  pthread_mutex_lock(&cs->mu);
  if ((known = signer__map_get(cs->shared, hex)) != NULL) { /* a racing parse won */
    X509_up_ref(known);
    X509_free(x);
    x = known;
  } else if (signer__map_put(cs->shared, hex, x, &ignored) == KYSO_OK) {
    X509_up_ref(x); /* one reference for the map, one for the caller */
  }
  pthread_mutex_unlock(&cs->mu);
  return x;
}

/* The next PEM CERTIFICATE block of bio as DER, or 0 at the end of input
 * (*end set) or at damage. */
static int next_der(BIO *bio, unsigned char **der, long *len, int *end) {
  char *name = NULL, *header = NULL;
  *der = NULL;
  *end = 0;
  ERR_set_mark();
  if (!PEM_read_bio(bio, &name, &header, der, len)) {
    unsigned long e = ERR_peek_last_error();
    *end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_pop_to_mark();
    return 0;
  }
  ERR_pop_to_mark();
  int ok = strcmp(name, PEM_STRING_X509) == 0 && header[0] == '\0';
  OPENSSL_free(name);
  OPENSSL_free(header);
  if (!ok) {
    OPENSSL_free(*der);
    *der = NULL;
  }
  return ok;
}

/* Parses the certificates of a stored file (the leaf, then shared chain
 * certificates); DATA_LOSS names the file when it is not what we wrote. */
static kyso_status parse_pem(signer__certstore *cs, const void *data, size_t len,
                             const char *path, cached **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  unsigned char *der = NULL;
  long der_len = 0;
  int end = 0;
  cached *c = calloc(1, sizeof(*c));
  BIO *bio = len > 0 ? BIO_new_mem_buf(data, (int)len) : NULL;
  *out = NULL;
  if (len == 0) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "certificate file '%s' is empty", path);
    goto out;
  }
  if (c == NULL || bio == NULL || (c->chain = sk_X509_new_null()) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory reading '%s'", path);
    goto out;
  }
  while (next_der(bio, &der, &der_len, &end)) {
    X509 *x = NULL;
    const unsigned char *p = der;
    if (c->cert == NULL) {
      if ((x = d2i_X509(NULL, &p, der_len)) != NULL && p != der + der_len) {
        X509_free(x);
        x = NULL;
      }
    } else {
      x = shared_cert(cs, der, der_len);
    }
    OPENSSL_free(der);
    der = NULL;
    if (x == NULL) break; /* damage, reported below */
    if (c->cert == NULL) {
      c->cert = x;
    } else if (sk_X509_num(c->chain) >= KYSO_MAX_CERT_CHAIN || !sk_X509_push(c->chain, x)) {
      X509_free(x);
      st = kyso_fail(err, KYSO_DATA_LOSS, "'%s' holds more than %d chain certificates", path,
                     KYSO_MAX_CERT_CHAIN);
      goto out;
    }
  }
  if (c->cert == NULL || !end) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "certificate file '%s' is damaged", path);
    kyso_err_add_openssl(err);
    goto out;
  }
  *out = c;
  c = NULL;
out:
  ERR_clear_error();
  BIO_free(bio);
  cached_free(c);
  return st;
}

/* PEM of cert then chain, each DER no larger than KYSO_MAX_CERT_DER. */
static kyso_status encode(const char *label, X509 *cert, STACK_OF(X509) *chain, BIO *mem,
                          kyso_err *err) {
  int n = sk_X509_num(chain) > 0 ? sk_X509_num(chain) : 0;
  if (n > KYSO_MAX_CERT_CHAIN)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "the chain for key '%s' has %d certificates; the limit is %d", label, n,
                     KYSO_MAX_CERT_CHAIN);
  for (int i = -1; i < n; i++) {
    X509 *x = i < 0 ? cert : sk_X509_value(chain, i);
    int der = x != NULL ? i2d_X509(x, NULL) : -1;
    if (der <= 0 || der > KYSO_MAX_CERT_DER) {
      kyso_fail(err, KYSO_INVALID_ARGUMENT,
                i < 0 ? "the certificate for key '%s' is not valid DER or over %d bytes"
                      : "a chain certificate for key '%s' is not valid DER or over %d bytes",
                label, KYSO_MAX_CERT_DER);
      kyso_err_add_openssl(err);
      return KYSO_INVALID_ARGUMENT;
    }
    if (!PEM_write_bio_X509(mem, x))
      return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory encoding certificates");
  }
  return KYSO_OK;
}

kyso_status signer__certstore_put(signer__certstore *cs, const char *label, X509 *cert,
                                  STACK_OF(X509) *chain, kyso_err *err) {
  kyso_status st;
  char path[PATH_MAX];
  char *data = NULL;
  cached *c = NULL;
  BIO *mem = BIO_new(BIO_s_mem());
  if (mem == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  if ((st = file_path(cs, label, path, err)) != KYSO_OK) goto out;
  if ((st = encode(label, cert, chain, mem, err)) != KYSO_OK) goto out;
  long len = BIO_get_mem_data(mem, &data);
  /* Cache what a reload would see, not the caller's objects. */
  if ((st = parse_pem(cs, data, (size_t)len, path, &c, err)) != KYSO_OK) goto out;
  pthread_mutex_lock(&cs->mu);
  st = kyso_write_file_atomic(path, data, (size_t)len, 0644, err);
  if (st == KYSO_OK && (st = signer__map_put(cs->cache, label, c, err)) == KYSO_OK) c = NULL;
  pthread_mutex_unlock(&cs->mu);
out:
  cached_free(c);
  BIO_free(mem);
  return st;
}

/* New references to c's certificate and chain (chain may be NULL); under mu. */
static kyso_status hand_out(const cached *c, X509 **cert, STACK_OF(X509) **chain,
                            kyso_err *err) {
  if (chain != NULL && (*chain = X509_chain_up_ref(c->chain)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory copying a chain");
  X509_up_ref(c->cert);
  *cert = c->cert;
  return KYSO_OK;
}

/* A hit is served under mu; a miss reads and parses the file outside it
 * (so one key's first use does not stall every other Sign), then caches
 * it unless a racing load got there first. */
kyso_status signer__certstore_get(signer__certstore *cs, const char *label, X509 **cert,
                                  STACK_OF(X509) **chain, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char path[PATH_MAX];
  kyso_buf file = {0};
  cached *c = NULL, *hit;
  *cert = NULL;
  if (chain != NULL) *chain = NULL;
  pthread_mutex_lock(&cs->mu);
  if ((hit = signer__map_get(cs->cache, label)) != NULL) st = hand_out(hit, cert, chain, err);
  pthread_mutex_unlock(&cs->mu);
  if (hit != NULL) return st;
  if ((st = file_path(cs, label, path, err)) != KYSO_OK) goto out;
  st = kyso_read_file(path, MAX_FILE, &file, err);
  if (st == KYSO_NOT_FOUND)
    st = kyso_fail(err, KYSO_NOT_FOUND, "no certificate was imported for key '%s'", label);
  if (st != KYSO_OK) goto out;
  if ((st = parse_pem(cs, file.data, file.len, path, &c, err)) != KYSO_OK) goto out;
  pthread_mutex_lock(&cs->mu);
  if ((hit = signer__map_get(cs->cache, label)) == NULL &&
      (st = signer__map_put(cs->cache, label, c, err)) == KYSO_OK) {
    hit = c;
    c = NULL;
  }
  if (hit != NULL) st = hand_out(hit, cert, chain, err);
  pthread_mutex_unlock(&cs->mu);
out:
  cached_free(c);
  kyso_buf_free(&file, 0);
  return st;
}
