/* kyso — a string-keyed hash map (chaining, doubling), for the caches kept
 * per key label. Its owner does the locking. */
#include <stdlib.h>
#include <string.h>

#include "signer_internal.h"

typedef struct entry {
  struct entry *next;
  void *value;
  char key[]; /* NUL-terminated copy */
} entry;

struct signer__map {
  entry **buckets;
  size_t nbuckets; /* a power of two */
  size_t count;
  void (*free_fn)(void *);
};

#define INITIAL_BUCKETS 64

/* FNV-1a: labels are short and not chosen to collide by anyone unauthorised
 * (they are key names the operator provisioned). */
static size_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return (size_t)h;
}

kyso_status signer__map_new(void (*free_fn)(void *), signer__map **out, kyso_err *err) {
  signer__map *m = calloc(1, sizeof(*m));
  if (m == NULL || (m->buckets = calloc(INITIAL_BUCKETS, sizeof(entry *))) == NULL) {
    free(m);
    *out = NULL;
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a key cache");
  }
  m->nbuckets = INITIAL_BUCKETS;
  m->free_fn = free_fn;
  *out = m;
  return KYSO_OK;
}

void signer__map_free(signer__map *m) {
  if (m == NULL) return;
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry *e = m->buckets[i];
    while (e != NULL) {
      entry *next = e->next;
      if (m->free_fn != NULL) m->free_fn(e->value);
      free(e);
      e = next;
    }
  }
  free(m->buckets);
  free(m);
}

static entry *find(const signer__map *m, const char *key) {
  for (entry *e = m->buckets[hash(key) & (m->nbuckets - 1)]; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) return e;
  return NULL;
}

void *signer__map_get(const signer__map *m, const char *key) {
  entry *e = find(m, key);
  return e != NULL ? e->value : NULL;
}

size_t signer__map_count(const signer__map *m) { return m->count; }

/* Doubles the table when it averages two entries per bucket; a failed
 * allocation just leaves the chains longer. */
static void grow(signer__map *m) {
  size_t n = m->nbuckets * 2;
  entry **b = calloc(n, sizeof(entry *));
  if (b == NULL) return;
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry *e = m->buckets[i];
    while (e != NULL) {
      entry *next = e->next;
      size_t j = hash(e->key) & (n - 1);
      e->next = b[j];
      b[j] = e;
      e = next;
    }
  }
  free(m->buckets);
  m->buckets = b;
  m->nbuckets = n;
}

kyso_status signer__map_put(signer__map *m, const char *key, void *value, kyso_err *err) {
  entry *e = find(m, key);
  if (e != NULL) {
    if (m->free_fn != NULL && e->value != value) m->free_fn(e->value);
    e->value = value;
    return KYSO_OK;
  }
  size_t len = strlen(key);
  if ((e = malloc(sizeof(*e) + len + 1)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory caching '%s'", key);
  memcpy(e->key, key, len + 1);
  e->value = value;
  size_t i = hash(key) & (m->nbuckets - 1);
  e->next = m->buckets[i];
  m->buckets[i] = e;
  if (++m->count > 2 * m->nbuckets) grow(m);
  return KYSO_OK;
}
