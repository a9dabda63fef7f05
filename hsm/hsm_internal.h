/* kyso — internals shared by the files of hsm/; nothing outside hsm/ includes
 * this. Every name here is hsm__ prefixed; everything else in hsm/ is static. */
#ifndef KYSO_HSM_INTERNAL_H
#define KYSO_HSM_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "kyso/hsm.h"

/* A caller waits this long for a free session before RESOURCE_EXHAUSTED: a
 * C_Sign takes under 1 ms (RSA-2048 ~0.7 ms on SoftHSM), so ten seconds of
 * waiting means the pool is far too small for the load, not a brief burst. */
#define HSM__POOL_WAIT_MS 10000

/* Handles per C_FindObjects call: enumeration is one linear scan of the token
 * (~0.5 s at 24,000 objects), so fetch many handles per round trip. */
#define HSM__FIND_BATCH 1024

/* Objects we enumerate in one token: a private and a public object per key,
 * plus certificates and the KEK, with headroom. */
#define HSM__MAX_OBJECTS (4 * KYSO_HSM_MAX_KEYS)

/* The DER encoding of the P-256 OID (1.2.840.10045.3.1.7), as CKA_EC_PARAMS. */
#define HSM__P256_OID_DER "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
#define HSM__P256_OID_LEN 10

/* A wrapped private key we accept: RSA-3072's PKCS#8 is ~1.8 KB, RFC 5649
 * adds at most 15 bytes; anything longer is not one of our keys. */
#define HSM__MAX_WRAPPED 4096
/* A SubjectPublicKeyInfo we accept: RSA-3072 is 422 bytes of DER. */
#define HSM__MAX_SPKI 1024
/* The most hsm__sign_prepare writes to `in`: DigestInfo(SHA-256), 51 bytes. */
#define HSM__SIGN_IN_MAX 51

/* ckr.c — PKCS#11 return values */
const char *hsm__rv_name(CK_RV rv);
/* Non-zero when rv means the token, its sessions or its handles are gone and
 * only hsm_reinit brings them back. */
int hsm__rv_gone(CK_RV rv);
/* Fails with the status rv deserves and a message "<what>: CKR_X", or, for a
 * token that went away, "<what>: HSM token 'T' went away (CKR_X); kysod will
 * reinitialise it". */
kyso_status hsm__fail_rv(kyso_err *err, CK_RV rv, const char *token,
                         const char *what_fmt, ...) KYSO_PRINTF(4, 5);

/* sigpipe.c — SIGPIPE blocked in the calling thread for one operation */
typedef struct hsm__sigpipe {
  sigset_t old;
  int was_pending;
} hsm__sigpipe;
void hsm__sigpipe_block(hsm__sigpipe *g);
/* Swallows a SIGPIPE raised since hsm__sigpipe_block, restores the mask. */
void hsm__sigpipe_restore(hsm__sigpipe *g);

/* module.c — one dlopen()ed PKCS#11 module, shared by every hsm of the
 * process (C_Initialize is per process, not per caller). */
typedef struct hsm__module hsm__module;
/* Loads and C_Initializes the module at path (or takes another reference).
 * *gen receives the module's generation (bumped by every restart). */
kyso_status hsm__module_acquire(const char *path, hsm__module **out,
                                uint64_t *gen, kyso_err *err);
/* Drops a reference; the last one C_Finalizes. NULL is fine. */
void hsm__module_release(hsm__module *m);
/* C_Finalize + C_Initialize, unless another hsm already restarted the module
 * since generation *gen; either way *gen becomes the current generation. */
kyso_status hsm__module_restart(hsm__module *m, uint64_t *gen, kyso_err *err);
CK_FUNCTION_LIST *hsm__module_functions(const hsm__module *m);
const char *hsm__module_path(const hsm__module *m);

/* pin.c — the user PIN, kept for hsm_reinit in one mlock()ed page */
typedef struct hsm__pin {
  char *page; /* NULL when no PIN is held */
  size_t len;
  size_t size;
} hsm__pin;
kyso_status hsm__pin_store(hsm__pin *p, const char *pin, kyso_err *err);
/* Overwrites, unlocks and unmaps the page. Safe to call twice. */
void hsm__pin_wipe(hsm__pin *p);

/* token.c — finding the token and logging in */
typedef struct hsm__slot {
  CK_SLOT_ID id;
  CK_FLAGS flags; /* CK_TOKEN_INFO flags */
} hsm__slot;
/* NOT_FOUND names the label, the module and the labels it saw. */
kyso_status hsm__token_find(CK_FUNCTION_LIST *fl, const char *module_path,
                            const char *label, hsm__slot *out, kyso_err *err);
/* One C_Login(CKU_USER), never retried. UNAUTHENTICATED for a wrong or
 * locked PIN. */
kyso_status hsm__token_login(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s,
                             const char *label, const hsm__slot *slot,
                             const hsm__pin *pin, kyso_err *err);

/* session_pool.c — a fixed set of open sessions, lent one at a time */
typedef struct hsm__pool {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* signalled when a session comes back */
  CK_SESSION_HANDLE *idle;
  unsigned nidle; /* sessions waiting to be lent */
  unsigned size;  /* sessions owned, lent or not */
  unsigned cap;
} hsm__pool;
kyso_status hsm__pool_init(hsm__pool *p, unsigned cap, kyso_err *err);
void hsm__pool_destroy(hsm__pool *p);
/* Adds an open session (the pool owns it from now on). */
void hsm__pool_add(hsm__pool *p, CK_SESSION_HANDLE s);
/* Blocks up to HSM__POOL_WAIT_MS for a session; RESOURCE_EXHAUSTED after. */
kyso_status hsm__pool_acquire(hsm__pool *p, const char *token,
                              CK_SESSION_HANDLE *out, kyso_err *err);
void hsm__pool_release(hsm__pool *p, CK_SESSION_HANDLE s);
/* C_CloseSession on every session; all must have been returned. */
void hsm__pool_close_all(hsm__pool *p, CK_FUNCTION_LIST *fl);

/* keymap.c — label → key, built once per (re)initialisation */
typedef enum {
  HSM__KEY_READY = 0,
  HSM__KEY_PENDING,     /* being generated; invisible to lookups */
  HSM__KEY_DUPLICATE,   /* the label is on more than one private key */
  HSM__KEY_UNSUPPORTED, /* a key type kyso does not sign with */
} hsm__key_state;

typedef struct hsm__key {
  struct hsm__key *next; /* hash chain */
  char label[KYSO_MAX_LABEL + 1];
  CK_OBJECT_HANDLE priv;
  CK_OBJECT_HANDLE pub; /* CK_INVALID_HANDLE when the token has none */
  hsm_key_type type;
  unsigned bits; /* RSA modulus bits, 256 for P-256 */
  hsm__key_state state;
  char what[32]; /* for UNSUPPORTED: "RSA-4096", "EC (not P-256)" … */
  uint8_t id[32];
  size_t id_len;
  int sensitive, extractable, wrap_with_trusted; /* as last read */
  EVP_PKEY *pubkey; /* built on first use, owned by the map */
} hsm__key;

typedef struct hsm__keymap {
  pthread_rwlock_t lock; /* read: lookups; write: changes */
  hsm__key **buckets;
  size_t nbuckets;
  size_t count;
  /* The KEK last found by label: finding it is a linear scan of the token,
   * and a new node unwraps every key of the cluster under it. */
  char kek_label[KYSO_MAX_LABEL + 1];
  CK_OBJECT_HANDLE kek;
} hsm__keymap;

/* Printable ASCII, 1..KYSO_MAX_LABEL bytes; INVALID_ARGUMENT otherwise. */
kyso_status hsm__label_check(const char *label, kyso_err *err);
kyso_status hsm__keymap_init(hsm__keymap *m, kyso_err *err);
void hsm__keymap_destroy(hsm__keymap *m);
void hsm__keymap_clear(hsm__keymap *m);
/* Inserts a copy of k found while enumerating; a second private key with the
 * same label turns the entry into HSM__KEY_DUPLICATE. */
kyso_status hsm__keymap_put(hsm__keymap *m, const hsm__key *k, kyso_err *err);
/* Sets the public handle of the key labelled `label`, if there is one. */
void hsm__keymap_attach_pub(hsm__keymap *m, const char *label,
                            CK_OBJECT_HANDLE pub);
/* Claims a label for generation: ALREADY_EXISTS if any key holds it. */
kyso_status hsm__keymap_reserve(hsm__keymap *m, const char *label,
                                const char *token, kyso_err *err);
/* Fills a reserved entry and makes it visible (takes a reference to
 * k->pubkey when set). */
void hsm__keymap_commit(hsm__keymap *m, const hsm__key *k);
/* Forgets a reserved entry after a failed generation. */
void hsm__keymap_cancel(hsm__keymap *m, const char *label);
/* Forgets the entry of a key destroyed in the token. */
void hsm__keymap_remove(hsm__keymap *m, const char *label);
/* Copies the key labelled `label` into *out, without the cached public key
 * (out->pubkey is NULL). NOT_FOUND / FAILED_PRECONDITION otherwise. */
kyso_status hsm__keymap_get(hsm__keymap *m, const char *label,
                            const char *token, hsm__key *out, kyso_err *err);
/* Caches pk (may be NULL) for `label` unless one is cached already; returns
 * a new reference to whichever is cached, or NULL if none is. */
EVP_PKEY *hsm__keymap_cache_pubkey(hsm__keymap *m, const char *label,
                                   EVP_PKEY *pk);
void hsm__keymap_set_flags(hsm__keymap *m, const char *label, int sensitive,
                           int extractable, int wrap_with_trusted);
/* Every READY key, sorted by label; *out is malloc()ed (NULL when empty). */
kyso_status hsm__keymap_list(hsm__keymap *m, hsm_key_info **out, size_t *n,
                             kyso_err *err);
void hsm__key_to_info(const hsm__key *k, hsm_key_info *info);
/* The cached handle of the KEK labelled kek_label, or CK_INVALID_HANDLE.
 * Cleared with the map, so a reinit never hands out a stale handle. */
CK_OBJECT_HANDLE hsm__keymap_kek(hsm__keymap *m, const char *kek_label);
void hsm__keymap_set_kek(hsm__keymap *m, const char *kek_label, CK_OBJECT_HANDLE kek);

/* keyscan.c — one enumeration pass over the token into the map */
kyso_status hsm__keyscan(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s,
                         const char *token, hsm__keymap *m, kyso_err *err);
/* Reads CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED of k->priv. */
kyso_status hsm__key_read_flags(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s,
                                const char *token, hsm__key *k, kyso_err *err);

/* pubkey.c — public halves as OpenSSL objects */
/* Builds an EVP_PKEY (default provider) from the token's public attributes
 * of k; the caller frees *out. */
kyso_status hsm__pubkey_read(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s,
                             const char *token, const hsm__key *k,
                             EVP_PKEY **out, kyso_err *err);
/* SHA-256 of the DER SubjectPublicKeyInfo: kyso's CKA_ID. */
kyso_status hsm__pubkey_id(EVP_PKEY *pk, uint8_t id[32], kyso_err *err);

/* sign.c — the C_Sign mechanism and input for a digest */
/* INVALID_ARGUMENT when mech does not fit k->type; in holds HSM__SIGN_IN_MAX. */
kyso_status hsm__sign_prepare(const hsm__key *k, const char *token, hsm_mech mech,
                              const uint8_t *digest, CK_MECHANISM *m,
                              CK_RSA_PKCS_PSS_PARAMS *pss, uint8_t *in, size_t *in_len,
                              kyso_err *err);

/* kek.c — the cluster's key-encryption key in this token */
/* CKA_UNWRAP_TEMPLATE of every kyso KEK, and part of every template we unwrap
 * with (SoftHSM wants the caller's template to repeat it): whatever is
 * unwrapped under the KEK is private, sensitive, never extractable again. */
#define HSM__KEK_GUARD_N 4
void hsm__kek_guard(CK_ATTRIBUTE t[HSM__KEK_GUARD_N]);
/* The KEK labelled kek_label, checked: an AES-256 secret key, CKA_TRUSTED,
 * wraps and unwraps, locked down (kek.c says how), the guard as its unwrap
 * template. FAILED_PRECONDITION names the ceremony (kyso-token import-kek)
 * otherwise. The handle is cached in h->map, re-checked on every use. */
kyso_status hsm__kek_find(hsm *h, CK_SESSION_HANDLE s, const char *kek_label,
                          CK_OBJECT_HANDLE *out, kyso_err *err);

/* spki.c — a SubjectPublicKeyInfo for a key arriving from another node */
/* Parses der (all of it) and checks it is a `type` key; caller frees *out. */
kyso_status hsm__spki_parse(const uint8_t *der, size_t len, hsm_key_type type,
                            const char *label, EVP_PKEY **out, kyso_err *err);
/* C_CreateObject of the public key pk: a session object (CKA_TOKEN=false)
 * labelled k->label with CKA_ID k->id, CKA_VERIFY only. */
kyso_status hsm__spki_create(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                             const hsm__key *k, EVP_PKEY *pk, CK_OBJECT_HANDLE *out,
                             kyso_err *err);

/* pairproof.c — a private object and a public key belong together */
/* Signs a random digest with priv (type k->type) and verifies it with pk in
 * OpenSSL. DATA_LOSS when they do not match. */
kyso_status hsm__pair_prove(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            const hsm__key *k, CK_OBJECT_HANDLE priv, EVP_PKEY *pk,
                            kyso_err *err);

/* hsm.c — the handle */
struct hsm {
  /* Read by every operation for its whole duration; written by hsm_reinit
   * and hsm_close, which therefore never run beside a C_Sign. Prefers
   * writers so a reinit is not starved by a stream of signers. */
  pthread_rwlock_t life;
  hsm__module *mod;
  CK_FUNCTION_LIST *fl;
  uint64_t mod_gen; /* module generation our sessions were opened in */
  hsm__slot slot;
  char token[33]; /* token label: CK_TOKEN_INFO.label is 32 bytes */
  unsigned max_sessions;
  int ready; /* 0 after a failed reinit: operations answer UNAVAILABLE */
  char down[KYSO_ERR_MSG_MAX]; /* why not ready */
  hsm__pin pin;
  hsm__pool pool;
  hsm__keymap map;
};

/* Takes h->life for reading and blocks SIGPIPE; UNAVAILABLE (all undone)
 * when h is down. Every operation is hsm__enter ... hsm__leave. */
kyso_status hsm__enter(hsm *h, hsm__sigpipe *g, kyso_err *err);
void hsm__leave(hsm *h, hsm__sigpipe *g);

#endif
