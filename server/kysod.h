/* kysod internals: the application state shared by the service handlers. */
#ifndef KYSOD_H
#define KYSOD_H

#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>

#include "kyso/archive.h"
#include "kyso/cluster.h"
#include "kyso/config.h"
#include "kyso/hsm.h"
#include "kyso/http.h"
#include "kyso/limits.h"
#include "kyso/tsa_state.h"
#include "kyso/rpc.h"
#include "kyso/signer.h"
#include "kyso/status.h"

#include "kyso/v1/common.pb-c.h"

typedef struct kysod {
  kyso_config cfg;
  hsm *hsm;
  signer *signer;
  archive *archive;
  cluster *cluster;         /* NULL on a single node ([cluster] has no members) */
  struct kysod_peers *peers;/* the other nodes (peers.c); NULL on a single node */
  struct kysod_key_sync *key_sync; /* installs the key registry here (key_sync.c); cluster only */
  struct kysod_collector *collector; /* unreferenced blobs (collector.c) */
  struct kysod_completions *completions; /* answers writes once committed (completions.c) */
  atomic_ulong writes_awaiting_commit;   /* proposed here by kysod__record_async, not yet
                                            committed (or failed) */
  X509_STORE *client_store; /* trust anchors for client certificates */
  rpc_peer_cache *verified; /* client certificates that verified against it, by
                               SHA-256 ([tls] peer_cache_seconds; NULL: off) */
  int test_sign_delay_ms;   /* fault injection for tests (KYSO_TEST_SIGN_DELAY_MS) */
  atomic_int serving;
  atomic_int hsm_recovering;
  /* Time-stamping (tsa_service.c) */
  pthread_rwlock_t tsa_lock; /* guards tsa: replaced when its certificate is imported */
  signer_tsa *tsa;           /* NULL until kyso/tsa/<name> has a key and certificate */
  char tsa_label[KYSO_MAX_LABEL + 1];
  tsa_state *tsa_state;      /* serials and genTime clock of this node */
  http_server *tsa_http;     /* RFC 3161 over HTTP, when [tsa] http_listen is set */
  X509_STORE *ext_tsa_store; /* [signer] timestamp_ca: trust anchors of the external TSA */
  /* Checkpoint catch-up (checkpoint_fetch.c, svc_peer_checkpoint.c) */
  struct kysod_checkpoints *checkpoints; /* the ones served to peers */
  atomic_int restart_for_checkpoint;     /* set before SIGUSR1: main restarts kysod */
  uint64_t checkpoints_installed;        /* fetched at this process's start */
} kysod;

/* Authorisation: client certificate -> caller -> roles -> operation. */
kyso_status kysod__authorize(void *app, rpc_peer *peer, const char *operation, kyso_err *err);

/* Key names: a KeyRef maps to one CKA_LABEL, "kyso/personal/<account>" or
 * "kyso/seal/<unit>", and back. */
kyso_status kysod__key_label(const Kyso__V1__KeyRef *ref, char *label, size_t size,
                             kyso_err *err) KYSO_MUST_CHECK;
/* Fills ref (strings point into label_copy, which must outlive ref). */
int kysod__label_to_ref(char *label_copy, Kyso__V1__KeyRef *ref);
/* Names of accounts and units: 1..KYSO_MAX_NAME of [A-Za-z0-9._@-]. */
kyso_status kysod__check_name(const char *what, const char *value, kyso_err *err) KYSO_MUST_CHECK;
/* Metadata strings: valid UTF-8, no control characters, bounded. */
kyso_status kysod__check_text(const char *what, const char *value, size_t max,
                              kyso_err *err) KYSO_MUST_CHECK;

/* Everything a Sign request must satisfy before any key is touched. */
struct Kyso__V1__SignRequest;
kyso_status kysod__check_sign_request(const struct Kyso__V1__SignRequest *req, size_t max_doc,
                                      kyso_err *err) KYSO_MUST_CHECK;

/* Metadata checks shared by Sign and Archive.Put (m may be NULL). */
struct Kyso__V1__DocumentMetadata;
kyso_status kysod__check_metadata(const struct Kyso__V1__DocumentMetadata *m,
                                  kyso_err *err) KYSO_MUST_CHECK;

/* A document as the API shows it (kyso.v1.DocumentInfo), built from the
 * archive's records; owns everything it points to. */
typedef struct kysod_doc_view kysod_doc_view;
kyso_status kysod__doc_view(kysod *d, const uint8_t id[32], int include_cms,
                            kysod_doc_view **out, kyso_err *err) KYSO_MUST_CHECK;
struct Kyso__V1__DocumentInfo *kysod__doc_view_info(kysod_doc_view *v);
void kysod__doc_view_free(kysod_doc_view *v);

/* Service handlers (one per RPC), all run through the rpc layer's dispatch. */
void kysod__signer_sign(rpc_call *call, void *app);
void kysod__keys_generate(rpc_call *call, void *app);
void kysod__keys_create_csr(rpc_call *call, void *app);
void kysod__keys_import_certificate(rpc_call *call, void *app);
void kysod__keys_list(rpc_call *call, void *app);
void kysod__health_check(rpc_call *call, void *app);
void kysod__archive_put(rpc_call *call, void *app);
void kysod__archive_get(rpc_call *call, void *app);
void kysod__archive_stat(rpc_call *call, void *app);
void kysod__archive_list(rpc_call *call, void *app);
void kysod__archive_scrub(rpc_call *call, void *app);
void kysod__archive_backup(rpc_call *call, void *app);
void kysod__cluster_status(rpc_call *call, void *app);
void kysod__cluster_add(rpc_call *call, void *app);
void kysod__cluster_remove(rpc_call *call, void *app);
void kysod__cluster_transfer(rpc_call *call, void *app);
void kysod__cluster_digest(rpc_call *call, void *app);

/* The key must exist in the token and have a certificate: NOT_FOUND or
 * FAILED_PRECONDITION telling the caller which step is missing. */
kyso_status kysod__require_key(kysod *d, const char *label, X509 **cert,
                               kyso_err *err) KYSO_MUST_CHECK;

/* After an UNAVAILABLE from the HSM: re-initialise it (one thread at a
 * time). OK means the caller may retry its operation once. */
kyso_status kysod__recover_hsm(kysod *d, kyso_err *err) KYSO_MUST_CHECK;

/* Time-stamping (tsa_service.c). kysod__tsa_open opens the serial/clock
 * state and the TSA if it is provisioned (a TSA certificate without the
 * critical timeStamping EKU is an error: kysod must not start); the HTTP
 * endpoint starts separately, once the rest is ready. */
kyso_status kysod__tsa_open(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
kyso_status kysod__tsa_http_start(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
void kysod__tsa_close(kysod *d);
/* Before a certificate is stored for label: a TSA key's must carry the EKU. */
kyso_status kysod__tsa_check_import(kysod *d, const char *label, X509 *cert,
                                    kyso_err *err) KYSO_MUST_CHECK;
/* After a certificate was stored for label: (re)opens the TSA if it is ours. */
void kysod__tsa_reload(kysod *d, const char *label);
/* 1 if the TSA can issue now; otherwise 0 and why. */
int kysod__tsa_ready(kysod *d, char *why, size_t why_size);
/* The signature-time-stamp token for a signature value's SHA-256, from
 * kysod's TSA or the external one ([signer] timestamp); *token
 * OPENSSL_malloc()ed, *info describes it. timeout_ms bounds an external
 * request. FAILED_PRECONDITION when time-stamps are off or the TSA is not
 * provisioned; UNAVAILABLE when it cannot issue now. */
kyso_status kysod__signature_timestamp(kysod *d, const uint8_t sha256[32], int64_t timeout_ms,
                                       uint8_t **token, size_t *token_len, signer_ts_info *info,
                                       kyso_err *err) KYSO_MUST_CHECK;
void kysod__timestamp_stamp(rpc_call *call, void *app);

/* State changes and reads (record.c). kysod__record sends a command to the
 * archive (single node) or through the Raft log (cluster), with its inline
 * document; kysod__require_writer refuses early, before any HSM work, when
 * this node cannot get a write recorded (no leader known, or a follower
 * with [cluster] forward off: UNAVAILABLE naming the leader);
 * kysod__read_barrier makes a read linearizable in a cluster. */
kyso_status kysod__record(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                          const uint8_t *blob, size_t blob_len, uint8_t **result,
                          size_t *result_len, kyso_err *err) KYSO_MUST_CHECK;
/* The same, but the outcome goes to fn, exactly once: at once on this
 * thread when known at once (one node, a follower's forward, a refusal),
 * else on the completion thread once this node, the leader, applied the
 * entry. Either way the caller's thread does not wait for a commit;
 * result (a serialised CommandResult, on OK) is valid during fn only. */
typedef void (*kysod_recorded_fn)(void *ctx, kyso_status st, const kyso_err *err,
                                  const uint8_t *result, size_t result_len);
void kysod__record_async(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                         const uint8_t *blob, size_t blob_len, kysod_recorded_fn fn, void *ctx);
/* completions.c: the thread that runs those continuations. Posting after
 * the stop (or out of memory) runs fn on the posting thread. */
typedef struct kysod_completions kysod_completions;
kyso_status kysod__completions_start(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
void kysod__completions_stop(kysod *d);
void kysod__completions_post(kysod *d, kysod_recorded_fn fn, void *ctx, kyso_status st,
                             const char *msg, const uint8_t *result, size_t result_len);
kyso_status kysod__require_writer(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
kyso_status kysod__read_barrier(kysod *d, rpc_call *call, kyso_err *err) KYSO_MUST_CHECK;
/* cluster_opts.applied: queues the documents of an applied entry for the fetcher. */
void kysod__on_applied(void *ctx, const archive_outcome *o, size_t n);

/* The other nodes (peers.c): kysod__peers_replicate puts a stored
 * document's bytes on as many peers as a majority needs (UNAVAILABLE when
 * too few answer); kysod__peers_want queues a document whose bytes this
 * node lacks for the fetcher thread (any thread; never blocks). */
typedef struct kysod_peers kysod_peers;
kyso_status kysod__peers_open(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
/* Stops the fetcher (before the cluster closes); kysod__peers_close frees
 * (after it closed). */
void kysod__peers_stop(kysod *d);
void kysod__peers_close(kysod *d);
/* first: a member that must be among the holders (asked first; 0: any). */
kyso_status kysod__peers_replicate(kysod *d, const uint8_t sha[32], uint64_t first,
                                   int64_t timeout_ms, kyso_err *err) KYSO_MUST_CHECK;
void kysod__peers_want(kysod *d, const uint8_t sha[32]);
void kysod__peer_has_blob(rpc_call *call, void *app);
void kysod__peer_put_blob(rpc_call *call, void *app);
void kysod__peer_get_blob(rpc_call *call, void *app);

/* The key registry on this node (key_sync.c): kysod__key_install makes the
 * token and certificate store hold what the registry records for label
 * (unwrapping it under the KEK, storing its certificate), one install at a
 * time; kysod__keys_want queues a label for the sync thread (any thread,
 * never blocks), which retries with back-off. The thread walks the whole
 * registry once at start. */
typedef struct kysod_key_sync kysod_key_sync;
/* key_registry.c: records a key of this token (wrapped under the KEK in a
 * cluster) or a certificate for one, through kysod__record. */
kyso_status kysod__register_key(kysod *d, rpc_call *call, const char *label, hsm_key_type type,
                                kyso_err *err) KYSO_MUST_CHECK;
kyso_status kysod__register_certificate(kysod *d, rpc_call *call, const char *label, X509 *cert,
                                        STACK_OF(X509) *chain, kyso_err *err) KYSO_MUST_CHECK;
/* 1 if the registry holds the label (with a certificate). */
int kysod__key_registered(kysod *d, const char *label);
int kysod__certificate_registered(kysod *d, const char *label);
kyso_status kysod__key_sync_open(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
void kysod__key_sync_stop(kysod *d);
void kysod__key_sync_close(kysod *d);
kyso_status kysod__key_install(kysod *d, const char *label, kyso_err *err) KYSO_MUST_CHECK;
void kysod__keys_want(kysod *d, const char *label);
/* Labels waiting for (or in) an install: Cluster.Status shows it. */
size_t kysod__keys_pending(kysod *d);

/* collector.c: the thread that collects unreferenced blobs after
 * [archive] orphan_grace_seconds. */
typedef struct kysod_collector kysod_collector;
kyso_status kysod__collector_start(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
void kysod__collector_stop(kysod *d);

/* ---- Catching up by a peer's archive checkpoint (issue 6) ---- */
/* A client of the member at rpc with this node's own certificate (peers.c). */
struct kyso_client;
kyso_status kysod__peer_client_open(const kyso_config *cfg, const char *rpc,
                                    struct kyso_client **out, kyso_err *err) KYSO_MUST_CHECK;
/* cluster_opts.checkpoint_needed (checkpoint_fetch.c): records durably in
 * DATA_DIR/checkpoint-needed that the archive must reach entry index, and
 * asks the main thread to restart kysod (SIGUSR1). 0 if recorded. */
int kysod__on_checkpoint_needed(void *ctx, uint64_t index);
/* At start, before the archive opens: with that record present, fetches a
 * peer's checkpoint that reaches the index, verifies it file by file and
 * puts it in place of DATA_DIR/archive, then removes the record. OK when
 * there was nothing to do too. */
kyso_status kysod__checkpoint_catch_up(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
/* The serving side (svc_peer_checkpoint.c): a few checkpoints open at a
 * time under DATA_DIR/checkpoints, each removed when closed or idle. */
typedef struct kysod_checkpoints kysod_checkpoints;
kyso_status kysod__checkpoints_open(kysod *d, kyso_err *err) KYSO_MUST_CHECK;
void kysod__checkpoints_close(kysod *d);
void kysod__peer_open_checkpoint(rpc_call *call, void *app);
void kysod__peer_get_checkpoint_file(rpc_call *call, void *app);
void kysod__peer_close_checkpoint(rpc_call *call, void *app);
/* ---- end of checkpoint catch-up ---- */
/* ---- Serving on any node: a follower serves calls through the leader ---- */
/* The client of member id at rpc (peers.c), opened on first use and kept
 * while kysod runs; NULL if it cannot be set up (logged). */
struct kyso_client *kysod__peer_client(kysod *d, uint64_t id, const char *rpc);
/* Packs m into *buf (malloc()ed). */
kyso_status kysod__pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len,
                        kyso_err *err) KYSO_MUST_CHECK;
typedef struct kysod_leader {
  uint64_t id;
  char rpc[CLUSTER_MAX_ADDRESS + 1];
} kysod_leader;
/* forward.c. 1 and the leader when this node serves calls through it (a
 * follower with [cluster] forward on and a leader known); else 0. */
int kysod__forward_to(kysod *d, kysod_leader *l);
/* The leader proposes cmd (prepared here); OK once this node applied it,
 * *result malloc()ed. UNAVAILABLE when the leader was lost on the way. */
kyso_status kysod__forward_propose(kysod *d, rpc_call *call, const kysod_leader *l,
                                   const uint8_t *cmd, size_t len, uint8_t **result,
                                   size_t *result_len, kyso_err *err) KYSO_MUST_CHECK;
/* OK once this node applied everything committed before the call. */
kyso_status kysod__forward_read_index(kysod *d, rpc_call *call, const kysod_leader *l,
                                      kyso_err *err) KYSO_MUST_CHECK;
/* svc_forward.c: the leader's side (kyso.v1.Peer/Propose, ReadIndex). */
void kysod__peer_propose(rpc_call *call, void *app);
void kysod__peer_read_index(rpc_call *call, void *app);
/* ---- end of serving on any node ---- */

/* Packs a protobuf-c message and finishes the call with OK. */
void kysod__reply(rpc_call *call, const ProtobufCMessage *msg);
/* Logs "WHAT failed principal=...: why" and finishes the call with it. */
void kysod__reply_failure(rpc_call *call, const char *what, kyso_status st, const kyso_err *err);

#endif
