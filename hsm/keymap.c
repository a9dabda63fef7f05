/* kyso — the key handle map: label → object handles, type and cached public
 * key. Built once per (re)initialisation from one enumeration of the token
 * and kept current by hsm_generate_key, so signing never searches the token
 * (a C_FindObjects by label is a linear scan: ~0.5 s at 12,000 keys).
 * Separate chaining, FNV-1a; grows by doubling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"

#define INITIAL_BUCKETS 1024

static uint64_t fnv1a(const char *s) {
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

static hsm__key **bucket(hsm__keymap *m, const char *label) {
  return &m->buckets[fnv1a(label) & (m->nbuckets - 1)];
}

static hsm__key *find(hsm__keymap *m, const char *label) {
  for (hsm__key *k = *bucket(m, label); k != NULL; k = k->next)
    if (strcmp(k->label, label) == 0) return k;
  return NULL;
}

static void free_chain(hsm__key *k) {
  while (k != NULL) {
    hsm__key *next = k->next;
    EVP_PKEY_free(k->pubkey);
    free(k);
    k = next;
  }
}

/* Doubles the bucket array once the chains average one entry. */
static kyso_status grow(hsm__keymap *m, kyso_err *err) {
  if (m->count < m->nbuckets) return KYSO_OK;
  size_t n = m->nbuckets * 2;
  hsm__key **b = calloc(n, sizeof(*b));
  if (b == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the key map");
  for (size_t i = 0; i < m->nbuckets; i++) {
    hsm__key *k = m->buckets[i];
    while (k != NULL) {
      hsm__key *next = k->next;
      hsm__key **slot = &b[fnv1a(k->label) & (n - 1)];
      k->next = *slot;
      *slot = k;
      k = next;
    }
  }
  free(m->buckets);
  m->buckets = b;
  m->nbuckets = n;
  return KYSO_OK;
}

/* Links a copy of k; the caller holds the write lock and knows the label is
 * not in the map. */
static kyso_status insert(hsm__keymap *m, const hsm__key *k, kyso_err *err) {
  if (m->count >= KYSO_HSM_MAX_KEYS)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "more than %d keys in one token",
                     KYSO_HSM_MAX_KEYS);
  kyso_status st = grow(m, err);
  if (st != KYSO_OK) return st;
  hsm__key *e = malloc(sizeof(*e));
  if (e == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the key map");
  *e = *k;
  e->pubkey = NULL;
  if (k->pubkey != NULL && EVP_PKEY_up_ref(k->pubkey)) e->pubkey = k->pubkey;
  hsm__key **slot = bucket(m, e->label);
  e->next = *slot;
  *slot = e;
  m->count++;
  return KYSO_OK;
}

kyso_status hsm__label_check(const char *label, kyso_err *err) {
  if (label == NULL || label[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a key label is required");
  size_t n = strnlen(label, KYSO_MAX_LABEL + 1);
  if (n > KYSO_MAX_LABEL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "key label '%.40s…' is longer than %d bytes",
                     label, KYSO_MAX_LABEL);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)label[i] < 0x20 || (unsigned char)label[i] > 0x7e)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "key label has a byte 0x%02x at offset %zu; labels are printable ASCII",
                       (unsigned char)label[i], i);
  return KYSO_OK;
}

kyso_status hsm__keymap_init(hsm__keymap *m, kyso_err *err) {
  m->count = 0;
  m->kek_label[0] = '\0';
  m->kek = CK_INVALID_HANDLE;
  m->nbuckets = INITIAL_BUCKETS;
  m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
  if (m->buckets == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the key map");
  if (pthread_rwlock_init(&m->lock, NULL) != 0) {
    free(m->buckets);
    m->buckets = NULL;
    return kyso_fail(err, KYSO_INTERNAL, "cannot initialise the key map's lock");
  }
  return KYSO_OK;
}

void hsm__keymap_destroy(hsm__keymap *m) {
  if (m->buckets == NULL) return;
  hsm__keymap_clear(m);
  pthread_rwlock_destroy(&m->lock);
  free(m->buckets);
  m->buckets = NULL;
}

void hsm__keymap_clear(hsm__keymap *m) {
  pthread_rwlock_wrlock(&m->lock);
  for (size_t i = 0; i < m->nbuckets; i++) {
    free_chain(m->buckets[i]);
    m->buckets[i] = NULL;
  }
  m->count = 0;
  m->kek_label[0] = '\0';
  m->kek = CK_INVALID_HANDLE;
  pthread_rwlock_unlock(&m->lock);
}

kyso_status hsm__keymap_put(hsm__keymap *m, const hsm__key *k, kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, k->label);
  if (e != NULL)
    e->state = HSM__KEY_DUPLICATE;
  else
    st = insert(m, k, err);
  pthread_rwlock_unlock(&m->lock);
  return st;
}

void hsm__keymap_attach_pub(hsm__keymap *m, const char *label, CK_OBJECT_HANDLE pub) {
  pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, label);
  if (e != NULL && e->pub == CK_INVALID_HANDLE) e->pub = pub;
  pthread_rwlock_unlock(&m->lock);
}

kyso_status hsm__keymap_reserve(hsm__keymap *m, const char *label, const char *token,
                                kyso_err *err) {
  kyso_status st = KYSO_OK;
  hsm__key k;
  memset(&k, 0, sizeof(k));
  snprintf(k.label, sizeof(k.label), "%s", label);
  k.state = HSM__KEY_PENDING;
  k.priv = k.pub = CK_INVALID_HANDLE;
  pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, label);
  if (e != NULL)
    st = kyso_fail(err, KYSO_ALREADY_EXISTS, "key '%s' already exists in token '%s'%s", label,
                   token, e->state == HSM__KEY_PENDING ? " (being generated)" : "");
  else
    st = insert(m, &k, err);
  pthread_rwlock_unlock(&m->lock);
  return st;
}

void hsm__keymap_commit(hsm__keymap *m, const hsm__key *k) {
  pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, k->label);
  if (e != NULL && e->state == HSM__KEY_PENDING) {
    hsm__key *next = e->next;
    *e = *k;
    e->next = next;
    e->state = HSM__KEY_READY;
    e->pubkey = NULL;
    if (k->pubkey != NULL && EVP_PKEY_up_ref(k->pubkey)) e->pubkey = k->pubkey;
  }
  pthread_rwlock_unlock(&m->lock);
}

void hsm__keymap_cancel(hsm__keymap *m, const char *label) {
  pthread_rwlock_wrlock(&m->lock);
  for (hsm__key **pp = bucket(m, label); *pp != NULL; pp = &(*pp)->next) {
    hsm__key *e = *pp;
    if (strcmp(e->label, label) != 0) continue;
    if (e->state == HSM__KEY_PENDING) {
      *pp = e->next;
      EVP_PKEY_free(e->pubkey);
      free(e);
      m->count--;
    }
    break;
  }
  pthread_rwlock_unlock(&m->lock);
}

void hsm__keymap_remove(hsm__keymap *m, const char *label) {
  pthread_rwlock_wrlock(&m->lock);
  for (hsm__key **pp = bucket(m, label); *pp != NULL; pp = &(*pp)->next) {
    hsm__key *e = *pp;
    if (strcmp(e->label, label) != 0) continue;
    *pp = e->next;
    EVP_PKEY_free(e->pubkey);
    free(e);
    m->count--;
    break;
  }
  pthread_rwlock_unlock(&m->lock);
}

kyso_status hsm__keymap_get(hsm__keymap *m, const char *label, const char *token,
                            hsm__key *out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_rwlock_rdlock(&m->lock);
  hsm__key *e = find(m, label);
  if (e == NULL || e->state == HSM__KEY_PENDING) {
    st = kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found in token '%s'", label, token);
  } else if (e->state == HSM__KEY_DUPLICATE) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "label '%s' is on more than one private key in token '%s'; "
                   "an operator must remove or relabel the extra one",
                   label, token);
  } else if (e->state == HSM__KEY_UNSUPPORTED) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' in token '%s' is %s, which kyso does not sign with", label,
                   token, e->what);
  } else {
    *out = *e;
    out->next = NULL;
    out->pubkey = NULL;
  }
  pthread_rwlock_unlock(&m->lock);
  return st;
}

EVP_PKEY *hsm__keymap_cache_pubkey(hsm__keymap *m, const char *label, EVP_PKEY *pk) {
  EVP_PKEY *ret = NULL;
  if (pk == NULL)
    pthread_rwlock_rdlock(&m->lock);
  else
    pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, label);
  if (e != NULL) {
    if (e->pubkey == NULL && pk != NULL && EVP_PKEY_up_ref(pk)) e->pubkey = pk;
    if (e->pubkey != NULL && EVP_PKEY_up_ref(e->pubkey)) ret = e->pubkey;
  }
  pthread_rwlock_unlock(&m->lock);
  return ret;
}

void hsm__keymap_set_flags(hsm__keymap *m, const char *label, int sensitive,
                           int extractable, int wrap_with_trusted) {
  pthread_rwlock_wrlock(&m->lock);
  hsm__key *e = find(m, label);
  if (e != NULL) {
    e->sensitive = sensitive;
    e->extractable = extractable;
    e->wrap_with_trusted = wrap_with_trusted;
  }
  pthread_rwlock_unlock(&m->lock);
}

void hsm__key_to_info(const hsm__key *k, hsm_key_info *info) {
  memset(info, 0, sizeof(*info));
  snprintf(info->label, sizeof(info->label), "%s", k->label);
  memcpy(info->id, k->id, k->id_len);
  info->id_len = k->id_len;
  info->type = k->type;
  info->sensitive = k->sensitive;
  info->extractable = k->extractable;
  info->wrap_with_trusted = k->wrap_with_trusted;
}

CK_OBJECT_HANDLE hsm__keymap_kek(hsm__keymap *m, const char *kek_label) {
  CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
  pthread_rwlock_rdlock(&m->lock);
  if (strcmp(m->kek_label, kek_label) == 0) o = m->kek;
  pthread_rwlock_unlock(&m->lock);
  return o;
}

void hsm__keymap_set_kek(hsm__keymap *m, const char *kek_label, CK_OBJECT_HANDLE kek) {
  pthread_rwlock_wrlock(&m->lock);
  snprintf(m->kek_label, sizeof(m->kek_label), "%s", kek_label);
  m->kek = kek;
  pthread_rwlock_unlock(&m->lock);
}

static int by_label(const void *a, const void *b) {
  return strcmp(((const hsm_key_info *)a)->label, ((const hsm_key_info *)b)->label);
}

kyso_status hsm__keymap_list(hsm__keymap *m, hsm_key_info **out, size_t *n, kyso_err *err) {
  kyso_status st = KYSO_OK;
  hsm_key_info *v = NULL;
  size_t used = 0;
  *out = NULL;
  *n = 0;
  pthread_rwlock_rdlock(&m->lock);
  if (m->count == 0) goto out;
  v = malloc(m->count * sizeof(*v));
  if (v == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing %zu keys", m->count);
    goto out;
  }
  for (size_t i = 0; i < m->nbuckets; i++)
    for (const hsm__key *k = m->buckets[i]; k != NULL; k = k->next)
      if (k->state == HSM__KEY_READY) hsm__key_to_info(k, &v[used++]);
out:
  pthread_rwlock_unlock(&m->lock);
  if (st == KYSO_OK && used > 0) {
    qsort(v, used, sizeof(*v), by_label);
    *out = v;
    *n = used;
  } else {
    free(v);
  }
  return st;
}
