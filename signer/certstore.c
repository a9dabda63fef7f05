/* kyso — the certificate store: one PEM file per key label under a
 * directory (the leaf first, then its chain), written atomically and
 * durably, and cached in memory because every Sign reads it. */
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
  pthread_mutex_t mu; /* the cache, and file writes */
  signer__map *cache; /* label -> cached */
};

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
  if ((st = signer__map_new(cached_free, &cs->cache, err)) != KYSO_OK) {
    signer__certstore_close(cs);
    return st;
  }
  *out = cs;
  return st;
}

void signer__certstore_close(signer__certstore *cs) {
  if (cs == NULL) return;
  signer__map_free(cs->cache);
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

/* Parses the certificates of a stored file; DATA_LOSS names the file when it
 * is not what we wrote. */
static kyso_status parse_pem(const void *data, size_t len, const char *path, cached **out,
                             kyso_err *err) {
  kyso_status st = KYSO_OK;
  X509 *x = NULL;
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
  ERR_set_mark();
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (c->cert == NULL) {
      c->cert = x;
    } else if (sk_X509_num(c->chain) >= KYSO_MAX_CERT_CHAIN || !sk_X509_push(c->chain, x)) {
      X509_free(x);
      ERR_pop_to_mark();
      st = kyso_fail(err, KYSO_DATA_LOSS, "'%s' holds more than %d chain certificates", path,
                     KYSO_MAX_CERT_CHAIN);
      goto out;
    }
  }
  /* The loop ends at the end of input (no start line) or at damage. */
  unsigned long e = ERR_peek_last_error();
  if (c->cert == NULL || ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "certificate file '%s' is damaged", path);
    kyso_err_add_openssl(err);
    ERR_clear_last_mark();
    goto out;
  }
  ERR_pop_to_mark();
  *out = c;
  c = NULL;
out:
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
  if ((st = parse_pem(data, (size_t)len, path, &c, err)) != KYSO_OK) goto out;
  pthread_mutex_lock(&cs->mu);
  st = kyso_write_file_atomic(path, data, (size_t)len, 0644, err);
  if (st == KYSO_OK && (st = signer__map_put(cs->cache, label, c, err)) == KYSO_OK) c = NULL;
  pthread_mutex_unlock(&cs->mu);
out:
  cached_free(c);
  BIO_free(mem);
  return st;
}

/* The cache entry of label, loaded from its file on first use; under mu. */
static kyso_status lookup_locked(signer__certstore *cs, const char *label, cached **out,
                                 kyso_err *err) {
  kyso_status st;
  char path[PATH_MAX];
  kyso_buf file = {0};
  cached *c = NULL;
  if ((*out = signer__map_get(cs->cache, label)) != NULL) return KYSO_OK;
  if ((st = file_path(cs, label, path, err)) != KYSO_OK) goto out;
  st = kyso_read_file(path, MAX_FILE, &file, err);
  if (st == KYSO_NOT_FOUND)
    st = kyso_fail(err, KYSO_NOT_FOUND, "no certificate was imported for key '%s'", label);
  if (st != KYSO_OK) goto out;
  if ((st = parse_pem(file.data, file.len, path, &c, err)) != KYSO_OK) goto out;
  if ((st = signer__map_put(cs->cache, label, c, err)) != KYSO_OK) goto out;
  *out = c;
  c = NULL;
out:
  cached_free(c);
  kyso_buf_free(&file, 0);
  return st;
}

kyso_status signer__certstore_get(signer__certstore *cs, const char *label, X509 **cert,
                                  STACK_OF(X509) **chain, kyso_err *err) {
  kyso_status st;
  cached *c = NULL;
  *cert = NULL;
  if (chain != NULL) *chain = NULL;
  pthread_mutex_lock(&cs->mu);
  if ((st = lookup_locked(cs, label, &c, err)) != KYSO_OK) goto out;
  if (chain != NULL && (*chain = X509_chain_up_ref(c->chain)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory copying a chain");
    goto out;
  }
  X509_up_ref(c->cert);
  *cert = c->cert;
out:
  pthread_mutex_unlock(&cs->mu);
  return st;
}
