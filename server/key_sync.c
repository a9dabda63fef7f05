/* kysod — bringing this node's token and certificate store up to the key
 * registry (the archive's replicated key records).
 *
 * A key is generated on one node, wrapped once under the cluster's KEK and
 * recorded through the Raft log; every node then unwraps it into its own
 * token and stores its certificate here, off the loop thread: the applied
 * hook queues the label (kysod__keys_want) and this module's thread
 * installs it, retrying with back-off while it cannot (no KEK yet: the
 * ceremony; the HSM away). At start the thread walks the whole registry
 * once, so a node added later, or one that was down, installs everything
 * it missed. Installs run one at a time: two unwraps of one label must not
 * race into two private keys under it. */
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"

#define WANT_MAX 65536          /* labels waiting (a province has ~12,000 keys) */
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000

typedef struct key_want {
  char label[KYSO_MAX_LABEL + 1];
  unsigned attempts;
  int64_t not_before_ms;
  struct key_want *next;
} key_want;

struct kysod_key_sync {
  kysod *d;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  key_want *head; /* waiting, in no particular order */
  size_t count;
  int stopping, started;
  int busy; /* a label taken off the queue is being installed */
  pthread_t thread;
  pthread_mutex_t install_mu; /* one install at a time, from any thread */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int same_bytes(const uint8_t *a, size_t alen, const ProtobufCBinaryData *b) {
  return alen == b->len && memcmp(a, b->data, alen) == 0;
}

/* The token's key under the label is the recorded one, or gets it. */
static kyso_status install_key(kysod *d, const Kyso__Store__V1__KeyRecord *r, kyso_err *err) {
  hsm_key_info info;
  hsm_key_type type;
  EVP_PKEY *pub = NULL;
  uint8_t *spki = NULL;
  kyso_status st = hsm_key_info_get(d->hsm, r->label, &info, err);
  if (st == KYSO_NOT_FOUND) {
    if (r->wrapped.len == 0)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "key '%s' was recorded without a wrapped copy (made on a node outside a "
                       "cluster), so it cannot be installed here",
                       r->label);
    if (!hsm_key_type_parse(r->algorithm, &type))
      return kyso_fail(err, KYSO_FAILED_PRECONDITION, "key '%s' has unknown algorithm '%s'",
                       r->label, r->algorithm);
    st = hsm_unwrap_key(d->hsm, r->label, type, r->public_key.data, r->public_key.len,
                        r->wrapped.data, r->wrapped.len, r->kek_label, NULL, err);
    if (st == KYSO_OK)
      kyso_log(KYSO_LOG_INFO, "key-sync key=%s installed from node %llu's wrapped copy",
               r->label, (unsigned long long)r->origin_node);
    return st;
  }
  if (st != KYSO_OK) return st;
  if ((st = hsm_public_key(d->hsm, r->label, &pub, err)) != KYSO_OK) return st;
  int n = i2d_PUBKEY(pub, &spki);
  if (n <= 0 || !same_bytes(spki, (size_t)n, &r->public_key))
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "this node's token holds another key under '%s' than the cluster's key "
                   "registry; an operator must remove it from this token",
                   r->label);
  OPENSSL_free(spki);
  EVP_PKEY_free(pub);
  return st;
}

static X509 *der_cert(const ProtobufCBinaryData *b) {
  const unsigned char *p = b->data;
  X509 *x = d2i_X509(NULL, &p, (long)b->len);
  if (x != NULL && p != b->data + b->len) {
    X509_free(x);
    x = NULL;
  }
  return x;
}

/* The certificate store holds the recorded certificate for the label. */
static kyso_status install_certificate(kysod *d, const Kyso__Store__V1__KeyRecord *r,
                                       kyso_err *err) {
  X509 *have = NULL, *cert = NULL;
  STACK_OF(X509) *chain = NULL;
  uint8_t *der = NULL;
  kyso_status st = signer_certificate(d->signer, r->label, &have, NULL, err);
  if (st == KYSO_OK) {
    int n = i2d_X509(have, &der);
    int same = n > 0 && same_bytes(der, (size_t)n, &r->certificate);
    OPENSSL_free(der);
    X509_free(have);
    if (same) return KYSO_OK;
  } else if (st != KYSO_NOT_FOUND) {
    return st;
  }
  st = KYSO_OK;
  if ((cert = der_cert(&r->certificate)) == NULL || (chain = sk_X509_new_null()) == NULL) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "the key registry's certificate of '%s' is not DER",
                   r->label);
    goto out;
  }
  for (size_t i = 0; i < r->n_chain; i++) {
    X509 *c = der_cert(&r->chain[i]);
    if (c == NULL || !sk_X509_push(chain, c)) {
      X509_free(c);
      st = kyso_fail(err, KYSO_DATA_LOSS,
                     "the key registry's chain[%zu] of '%s' is not a DER certificate", i, r->label);
      goto out;
    }
  }
  if ((st = kysod__tsa_check_import(d, r->label, cert, err)) != KYSO_OK) goto out;
  if ((st = signer_import_certificate(d->signer, r->label, cert, chain, err)) != KYSO_OK) goto out;
  kyso_log(KYSO_LOG_INFO, "key-sync key=%s certificate %u installed", r->label,
           r->certificate_generation);
  kysod__tsa_reload(d, r->label);
out:
  X509_free(cert);
  sk_X509_pop_free(chain, X509_free);
  return st;
}

kyso_status kysod__key_install(kysod *d, const char *label, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  Kyso__Store__V1__KeyRecord *r = NULL;
  kysod_key_sync *ks = d->key_sync;
  kyso_status st = archive_get_key(d->archive, label, &v, &n, err);
  if (st != KYSO_OK) return st;
  if ((r = kyso__store__v1__key_record__unpack(NULL, n, v)) == NULL) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "the key registry's record of '%s' is damaged", label);
    goto out;
  }
  if (ks != NULL) pthread_mutex_lock(&ks->install_mu);
  st = install_key(d, r, err);
  if (st == KYSO_OK && r->certificate.len > 0) st = install_certificate(d, r, err);
  if (ks != NULL) pthread_mutex_unlock(&ks->install_mu);
out:
  kyso__store__v1__key_record__free_unpacked(r, NULL);
  free(v);
  return st;
}

/* Caller holds mu. A label already waiting is not queued twice; one being
 * installed right now may be (its install may have read an older record). */
static void enqueue(kysod_key_sync *ks, const char *label, unsigned attempts, int64_t not_before) {
  for (key_want *w = ks->head; w != NULL; w = w->next)
    if (strcmp(w->label, label) == 0) return;
  key_want *w = ks->count < WANT_MAX ? calloc(1, sizeof(*w)) : NULL;
  if (w == NULL) {
    kyso_log(KYSO_LOG_ERROR,
             "key-sync: cannot queue key '%s' (%zu waiting); it will be installed at the next "
             "start", label, ks->count);
    return;
  }
  snprintf(w->label, sizeof(w->label), "%s", label);
  w->attempts = attempts;
  w->not_before_ms = not_before;
  w->next = ks->head;
  ks->head = w;
  ks->count++;
  pthread_cond_signal(&ks->wake);
}

size_t kysod__keys_pending(kysod *d) {
  kysod_key_sync *ks = d->key_sync;
  if (ks == NULL) return 0;
  pthread_mutex_lock(&ks->mu);
  size_t n = ks->count + (size_t)ks->busy;
  pthread_mutex_unlock(&ks->mu);
  return n;
}

void kysod__keys_want(kysod *d, const char *label) {
  kysod_key_sync *ks = d->key_sync;
  if (ks == NULL || label == NULL || label[0] == '\0' || strlen(label) > KYSO_MAX_LABEL) return;
  pthread_mutex_lock(&ks->mu);
  if (!ks->stopping) enqueue(ks, label, 0, 0);
  pthread_mutex_unlock(&ks->mu);
}

static kyso_status scan_one(void *ctx, const char *label, const uint8_t *rec, size_t len,
                            kyso_err *err) {
  (void)rec;
  (void)len;
  (void)err;
  kysod__keys_want(ctx, label);
  return KYSO_OK;
}

/* Caller holds mu: the first waiting label that is due, unlinked. */
static key_want *take_due(kysod_key_sync *ks, int64_t now, int64_t *next_due) {
  *next_due = 0;
  for (key_want **pp = &ks->head; *pp != NULL; pp = &(*pp)->next) {
    key_want *w = *pp;
    if (w->not_before_ms <= now) {
      *pp = w->next;
      ks->count--;
      return w;
    }
    if (*next_due == 0 || w->not_before_ms < *next_due) *next_due = w->not_before_ms;
  }
  return NULL;
}

static void *run(void *arg) {
  kysod_key_sync *ks = arg;
  kysod *d = ks->d;
  kyso_err err = {0};
  if (archive_each_key(d->archive, scan_one, d, &err) != KYSO_OK)
    kyso_log(KYSO_LOG_ERROR, "key-sync: cannot read the key registry: %s", err.msg);
  pthread_mutex_lock(&ks->mu);
  while (!ks->stopping) {
    int64_t next_due = 0;
    key_want *w = take_due(ks, now_ms(), &next_due);
    if (w == NULL) {
      if (next_due == 0) {
        pthread_cond_wait(&ks->wake, &ks->mu);
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = next_due - now_ms();
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&ks->wake, &ks->mu, &ts);
      }
      continue;
    }
    ks->busy = 1;
    pthread_mutex_unlock(&ks->mu);
    memset(&err, 0, sizeof(err));
    kyso_status st = kysod__key_install(d, w->label, &err);
    pthread_mutex_lock(&ks->mu);
    ks->busy = 0;
    if (st != KYSO_OK && !ks->stopping) {
      unsigned a = w->attempts + 1;
      int64_t backoff = BACKOFF_FIRST_MS;
      for (unsigned i = 1; i < a && backoff < BACKOFF_MAX_MS; i++) backoff *= 2;
      if (backoff > BACKOFF_MAX_MS) backoff = BACKOFF_MAX_MS;
      kyso_log(a <= 3 || a % 20 == 0 ? KYSO_LOG_WARN : KYSO_LOG_DEBUG,
               "key-sync: key '%s' not installed on node %u (attempt %u, next in %lld ms): %s",
               w->label, d->cfg.node_id, a, (long long)backoff, err.msg);
      enqueue(ks, w->label, a, now_ms() + backoff);
    }
    free(w);
  }
  pthread_mutex_unlock(&ks->mu);
  return NULL;
}

kyso_status kysod__key_sync_open(kysod *d, kyso_err *err) {
  kysod_key_sync *ks = calloc(1, sizeof(*ks));
  if (ks == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory (key sync)");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&ks->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&ks->mu, NULL);
  pthread_mutex_init(&ks->install_mu, NULL);
  ks->d = d;
  d->key_sync = ks;
  if (pthread_create(&ks->thread, NULL, run, ks) != 0) {
    d->key_sync = NULL;
    pthread_cond_destroy(&ks->wake);
    pthread_mutex_destroy(&ks->mu);
    pthread_mutex_destroy(&ks->install_mu);
    free(ks);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot start the key-sync thread");
  }
  ks->started = 1;
  return KYSO_OK;
}

void kysod__key_sync_stop(kysod *d) {
  kysod_key_sync *ks = d->key_sync;
  if (ks == NULL || !ks->started) return;
  pthread_mutex_lock(&ks->mu);
  ks->stopping = 1;
  pthread_cond_signal(&ks->wake);
  pthread_mutex_unlock(&ks->mu);
  pthread_join(ks->thread, NULL);
  ks->started = 0;
}

void kysod__key_sync_close(kysod *d) {
  kysod_key_sync *ks = d->key_sync;
  if (ks == NULL) return;
  kysod__key_sync_stop(d);
  d->key_sync = NULL;
  while (ks->head != NULL) {
    key_want *w = ks->head;
    ks->head = w->next;
    free(w);
  }
  pthread_cond_destroy(&ks->wake);
  pthread_mutex_destroy(&ks->mu);
  pthread_mutex_destroy(&ks->install_mu);
  free(ks);
}
