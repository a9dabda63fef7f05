/* kyso — the peer cache (kyso/rpc.h): a fixed table of entries found through
 * a hash of their key, evicted by a clock hand, behind one mutex. Keys are
 * SHA-256 values, so their first bytes are already a good hash. */
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"

typedef struct entry {
  uint8_t key[32];
  uint8_t sha256[32];
  X509 *cert;          /* a reference of ours, or NULL */
  int64_t expires_ms;  /* monotonic */
  time_t not_after;    /* wall clock */
  int32_t next;        /* next entry in the same bucket, -1 ends */
  uint8_t used;
  uint8_t ref;         /* looked up since the hand last passed: spared once */
} entry;

struct rpc_peer_cache {
  pthread_mutex_t mu;
  entry *e;
  uint32_t cap;
  uint32_t filled;     /* entries ever taken: e[filled..cap) were never used */
  uint32_t hand;
  uint32_t live;       /* used entries */
  int32_t *bucket;     /* first entry of each bucket, -1 for none */
  uint32_t mask;
  int64_t ttl_ms;
  rpc__clock clock;
};

static int64_t real_mono_ms(void *ctx) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static time_t real_wall(void *ctx) { return time(NULL); }

static const rpc__clock real_clock = {real_mono_ms, real_wall, NULL};

kyso_status rpc_peer_cache_new(unsigned entries, unsigned ttl_seconds, rpc_peer_cache **out,
                               kyso_err *err) {
  rpc_peer_cache *c = NULL;
  uint32_t buckets = 1;
  *out = NULL;
  if (ttl_seconds == 0) return KYSO_OK;
  if (entries == 0 || entries > (1u << 20))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "peer cache: %u entries (from 1 to %u)", entries, 1u << 20);
  while (buckets < entries) buckets <<= 1;
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "peer cache: out of memory");
  pthread_mutex_init(&c->mu, NULL);
  if ((c->e = calloc(entries, sizeof(*c->e))) == NULL ||
      (c->bucket = malloc(buckets * sizeof(*c->bucket))) == NULL) {
    rpc_peer_cache_free(c);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "peer cache: out of memory for %u entries",
                     entries);
  }
  memset(c->bucket, 0xff, buckets * sizeof(*c->bucket));
  c->cap = entries;
  c->mask = buckets - 1;
  c->ttl_ms = (int64_t)ttl_seconds * 1000;
  c->clock = real_clock;
  *out = c;
  return KYSO_OK;
}

void rpc_peer_cache_free(rpc_peer_cache *c) {
  if (c == NULL) return;
  if (c->e != NULL && c->bucket != NULL) rpc_peer_cache_clear(c);
  pthread_mutex_destroy(&c->mu);
  free(c->bucket);
  free(c->e);
  free(c);
}

void rpc__peer_cache_set_clock(rpc_peer_cache *c, const rpc__clock *clock) {
  if (c != NULL) c->clock = clock ? *clock : real_clock;
}

size_t rpc__peer_cache_count(rpc_peer_cache *c) {
  size_t n = 0;
  if (c == NULL) return 0;
  pthread_mutex_lock(&c->mu);
  n = c->live;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static uint32_t bucket_of(const rpc_peer_cache *c, const uint8_t key[32]) {
  uint32_t h;
  memcpy(&h, key, sizeof(h));
  return h & c->mask;
}

/* The entry holding key, or -1. Under mu. */
static int32_t find(const rpc_peer_cache *c, const uint8_t key[32]) {
  for (int32_t i = c->bucket[bucket_of(c, key)]; i >= 0; i = c->e[i].next)
    if (memcmp(c->e[i].key, key, 32) == 0) return i;
  return -1;
}

/* Takes entry i out of its bucket; returns its certificate for the caller to
 * free once the lock is released. Under mu. */
static X509 *drop(rpc_peer_cache *c, int32_t i) {
  entry *e = &c->e[i];
  int32_t *link = &c->bucket[bucket_of(c, e->key)];
  X509 *cert = e->cert;
  while (*link != i) link = &c->e[*link].next;
  *link = e->next;
  memset(e, 0, sizeof(*e));
  c->live--;
  return cert;
}

static int dead(const entry *e, int64_t now_ms, time_t wall) {
  return now_ms >= e->expires_ms || wall >= e->not_after;
}

/* A free entry: never used yet, emptied, or the first the clock hand finds
 * expired or not looked up since it last passed (that one is dropped, its
 * certificate handed back in *old). Under mu. */
static int32_t take(rpc_peer_cache *c, int64_t now_ms, time_t wall, X509 **old) {
  if (c->filled < c->cap) return (int32_t)c->filled++;
  for (;;) {
    int32_t i = (int32_t)c->hand;
    entry *e = &c->e[i];
    c->hand = (c->hand + 1) % c->cap;
    if (!e->used) return i;
    if (!e->ref || dead(e, now_ms, wall)) {
      *old = drop(c, i);
      return i;
    }
    e->ref = 0;
  }
}

int rpc_peer_cache_get(rpc_peer_cache *c, const uint8_t key[32], X509 **cert,
                       uint8_t sha256[32]) {
  int hit = 0;
  X509 *stale = NULL;
  if (c == NULL) return 0;
  int64_t now_ms = c->clock.mono_ms(c->clock.ctx);
  time_t wall = c->clock.wall(c->clock.ctx);
  pthread_mutex_lock(&c->mu);
  int32_t i = find(c, key);
  if (i < 0) goto out;
  entry *e = &c->e[i];
  if (dead(e, now_ms, wall)) {
    stale = drop(c, i);
    goto out;
  }
  if (cert != NULL) {
    if (e->cert == NULL || X509_up_ref(e->cert) != 1) goto out;
    *cert = e->cert;
  }
  if (sha256 != NULL) memcpy(sha256, e->sha256, 32);
  e->ref = 1;
  hit = 1;
out:
  pthread_mutex_unlock(&c->mu);
  X509_free(stale);
  return hit;
}

/* *out = t as seconds since the epoch; 0 when t cannot be read. */
static int to_time_t(const ASN1_TIME *t, time_t *out) {
  struct tm tm;
  if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  *out = timegm(&tm);
  return *out != (time_t)-1;
}

void rpc_peer_cache_put(rpc_peer_cache *c, const uint8_t key[32], X509 *cert,
                        const uint8_t sha256[32], const ASN1_TIME *not_after) {
  X509 *old = NULL;
  time_t until = 0;
  if (c == NULL || !to_time_t(not_after, &until)) return;
  int64_t now_ms = c->clock.mono_ms(c->clock.ctx);
  time_t wall = c->clock.wall(c->clock.ctx);
  if (wall >= until) return;
  if (cert != NULL && X509_up_ref(cert) != 1) return;
  pthread_mutex_lock(&c->mu);
  int32_t i = find(c, key);
  entry *e = NULL;
  if (i >= 0) {
    e = &c->e[i];
    old = e->cert;
  } else {
    i = take(c, now_ms, wall, &old);
    e = &c->e[i];
    memcpy(e->key, key, 32);
    uint32_t b = bucket_of(c, key);
    e->next = c->bucket[b];
    c->bucket[b] = i;
    e->used = 1;
    c->live++;
  }
  memset(e->sha256, 0, 32);
  if (sha256 != NULL) memcpy(e->sha256, sha256, 32);
  e->cert = cert;
  e->expires_ms = now_ms + c->ttl_ms;
  e->not_after = until;
  e->ref = 1; /* a new entry outlives one pass of the hand: the oldest go first */
  pthread_mutex_unlock(&c->mu);
  X509_free(old);
}

void rpc_peer_cache_clear(rpc_peer_cache *c) {
  if (c == NULL) return;
  pthread_mutex_lock(&c->mu);
  for (uint32_t i = 0; i < c->filled; i++) X509_free(c->e[i].cert);
  memset(c->e, 0, c->cap * sizeof(*c->e));
  memset(c->bucket, 0xff, (size_t)(c->mask + 1) * sizeof(*c->bucket));
  c->filled = c->hand = c->live = 0;
  pthread_mutex_unlock(&c->mu);
}
