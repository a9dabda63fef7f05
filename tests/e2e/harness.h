/* kyso end-to-end harness: a throw-away PKI and SoftHSM token in a temp
 * directory, a real kysod process on a loopback port, one gRPC/TLS client per
 * identity, and helpers that run the openssl command line. Used from cmocka
 * tests: a helper that cannot go on fails the current test itself, printing
 * got/want and the tail of kysod's stderr. Main thread only, except
 * e2e_key_ref and e2e_sha256_hex (and kyso_client itself, which is
 * thread-safe). */
#ifndef KYSO_E2E_HARNESS_H
#define KYSO_E2E_HARNESS_H

#include <protobuf-c/protobuf-c.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kyso/client.h"
#include "kyso/v1/common.pb-c.h"
#include "kyso/v1/archive.pb-c.h"
#include "kyso/v1/signer.pb-c.h"
#include "kyso/v1/timestamp.pb-c.h"

/* Who calls: each identity is its own client certificate (or none). */
typedef enum {
  E2E_DMS,       /* client.pem, [caller.dms] roles=service */
  E2E_OPS,       /* operator.pem, [caller.ops] roles=operator */
  E2E_ARCH,      /* archivist.pem, [caller.arch] roles=archivist */
  E2E_ANON,      /* no client certificate */
  E2E_STRANGER,  /* stranger.pem: issued by our CA, not registered */
  E2E_DMS_BIG,   /* client.pem with a 16 MiB send limit: lets the server refuse */
  E2E_IDENTITIES
} e2e_ident;

typedef struct e2e {
  char dir[256];          /* the run's temp directory */
  char pki[300];          /* DIR/pki: root.pem, chain.pem, NAME.pem + NAME.key */
  char config[300];       /* kysod's INI */
  char pin_file[300];
  char so_pin_file[300];  /* the token's SO PIN (a test token's: the KEK ceremony needs it) */
  char hsm_conf[300];     /* SOFTHSM2_CONF */
  char token[32];
  char pin[40];
  char stderr_path[300];  /* kysod's stderr of the current/last start */
  pid_t pid;              /* running kysod, or 0 */
  int port;
  int stdout_fd;          /* read end of kysod's stdout pipe */
  int starts;
  int tsa_http_port;      /* the RFC 3161 HTTP endpoint's port, 0 when off */
  int no_auto_tsa;        /* set before the first e2e_start: do not provision the TSA */
  int tsa_provisioned;    /* the harness provisioned it already */
  char host[64];          /* where kysod listens, for the clients ("127.0.0.1") */
  int netns_fd;           /* >= 0: kysod runs in this network namespace (set before e2e_start) */
  char tsa_name[32];      /* the TSA key auto-provisioned: kyso/tsa/<tsa_name> ("default") */
  kyso_client *clients[E2E_IDENTITIES];
} e2e;

/* Lifecycle */
/* Temp dir, PKI, SoftHSM token, PIN file, kysod config. NULL on failure
 * (after printing why). */
e2e *e2e_new(void);
/* Stops kysod if running (SIGKILL: teardown after a failure), closes clients,
 * removes the temp dir unless KYSO_KEEP_TMP is set. NULL is fine. */
void e2e_free(e2e *e);
/* Spawns kysod with SOFTHSM2_CONF plus extra_env ("K=V", NULL-terminated,
 * may be NULL; they replace variables of the same name) and waits for "kysod: ready on ... port N"; opens the clients.
 * On the first start that gets ready (unless no_auto_tsa) it provisions the TSA key
 * kyso/tsa/default (EC P-256, pki.sh's tsa profile), as a real deployment
 * does before signing: kysod's signatures are CAdES-T by default.
 * Returns 0 when ready; otherwise fails the test, printing kysod's stderr. */
int e2e_start(e2e *e, const char *const *extra_env);
/* Like e2e_start, but for a kysod expected to exit before it is ready:
 * returns 0 and its wait status in *wstatus if it exited, -1 if it got ready
 * (it is then stopped). */
int e2e_start_expect_exit(e2e *e, const char *const *extra_env, int *wstatus);
/* Appends text (INI lines, e.g. "[tsa]\nhttp_listen = 127.0.0.1:0\n") to
 * kysod's configuration, for the next start. */
void e2e_config_append(e2e *e, const char *text);
/* SIGTERM + waitpid; fails the test unless kysod exits with status 0 and its
 * stderr is clean (e2e_check_log_clean). */
int e2e_stop(e2e *e);
/* Replaces the PIN file's content (0600). */
void e2e_write_pin(e2e *e, const char *pin);

/* Calls */
/* One unary call on identity who's client with raw request bytes. */
int e2e_call_raw(e2e *e, e2e_ident who, const char *method, const uint8_t *req,
                 size_t len, int64_t timeout_ms, kyso_reply *reply);
/* Packs req, calls, and unpacks the response into *resp when the status is
 * OK (resp may be NULL). Returns the gRPC status; msg (may be NULL) gets the
 * status message. */
int e2e_call(e2e *e, e2e_ident who, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
             ProtobufCMessage **resp, char *msg, size_t msg_size);

/* Keys and signing (harness_keys.c) */
/* Fills a KeyRef: for KEY_ROLE_SEAL name is the unit (applied by account
 * "van.thu", the clerk), otherwise the account. Strings are not copied. */
void e2e_key_ref(Kyso__V1__KeyRef *ref, Kyso__V1__KeyRole role, const char *name);
/* Keys.Generate only (no certificate), as the operator. */
int e2e_generate_key(e2e *e, Kyso__V1__KeyRole role, const char *name,
                     Kyso__V1__KeyAlgorithm alg);
/* Keys.Generate -> Keys.CreateCsr -> pki.sh issue (signer|seal|tsa profile) ->
 * Keys.ImportCertificate (leaf as DER, chain.pem as PEM), as the operator. */
/* 1 when Keys.List on e shows the key with a certificate (installed from
 * the key registry, on a node that did not make it); fails the test if the
 * call fails. */
int e2e_key_ready(e2e *e, Kyso__V1__KeyRole role, const char *name);
int e2e_provision_key(e2e *e, Kyso__V1__KeyRole role, const char *name,
                      Kyso__V1__KeyAlgorithm alg);
/* Signer.Sign of doc by identity who with the key (role, name), in the
 * node's default format (CAdES-T); request_id may be NULL. Returns the gRPC status; *resp (OK only) is the caller's to
 * free with kyso__v1__sign_response__free_unpacked. */
int e2e_sign(e2e *e, e2e_ident who, Kyso__V1__KeyRole role, const char *name, int rsa_scheme,
             const uint8_t *doc, size_t len, const char *request_id, int64_t timeout_ms,
             Kyso__V1__SignResponse **resp, char *msg, size_t msg_size);
/* What a CMS signature says about itself. */
typedef struct e2e_cms_info {
  int sig_nid;          /* signature algorithm (NID_rsassaPss, NID_ecdsa_with_SHA256 ...) */
  int ec_r_len, ec_s_len; /* ECDSA only: minimal byte lengths of r and s */
  int ec_high_bit;      /* ECDSA: r or s has its top bit set (DER adds 0x00) */
  int ec_der_canonical; /* ECDSA: re-encoding gives the same bytes */
} e2e_cms_info;
/* Parses a DER CMS SignedData; fails the test if it does not parse. */
void e2e_cms_inspect(const uint8_t *der, size_t len, e2e_cms_info *out);
/* SubjectPublicKeyInfo DER of a DER certificate (malloc()ed), NULL if bad. */
uint8_t *e2e_cert_spki(const uint8_t *cert, size_t cert_len, size_t *spki_len);

/* Processes and files */
/* Runs argv (PATH lookup) with stdout+stderr to out_file (NULL: /dev/null);
 * returns the exit status, or -1 if it did not exit normally. */
int e2e_run(const char *const *argv, const char *out_file);
/* e2e_run in two halves: start (-1 on failure), then the exit status. */
pid_t e2e_spawn(const char *const *argv, const char *out_file);
int e2e_wait_exit(pid_t pid);
/* Runs `sh -c script` the same way. */
int e2e_sh(const char *out_file, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* `openssl cms -verify -cades ...` of sig over doc against root.pem: exit status. */
int e2e_openssl_verify(e2e *e, const char *doc, const char *sig);
/* Verifies DIR/<i>.doc with DIR/<i>.doc.p7s for i in [0, count) with
 * openssl, one `sh -c` loop per 100 files, up to `jobs` loops at a time.
 * Returns 0 if all verify; otherwise prints which files failed. */
int e2e_openssl_verify_many(e2e *e, const char *dir, int count, int jobs);
int e2e_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file (NUL-terminated, *len excludes the NUL); caller frees. */
uint8_t *e2e_read_file(const char *path, size_t *len);
/* 1 if the file contains needle. */
int e2e_file_contains(const char *path, const char *needle);
/* Waits (inotify, bounded by timeout_ms) until path contains needle. */
int e2e_wait_for_text(const char *path, const char *needle, int timeout_ms);
/* Fails the test if kysod's current stderr file holds an error-level log
 * line, an "ERROR" or a sanitizer report. */
void e2e_check_log_clean(e2e *e);
/* Path under the run's temp dir, in one of 8 rotating static buffers. */
const char *e2e_path(e2e *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Lower-case hex SHA-256 of data into out[65]. */
void e2e_sha256_hex(const uint8_t *data, size_t len, char out[65]);

/* Failures: print a message and fail the current cmocka test. */
#define E2E_FAIL(...) e2e__fail(__FILE__, __LINE__, __VA_ARGS__)
void e2e__fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* Integer got/want check. */
#define E2E_EQ(what, got, want)                                                    \
  do {                                                                             \
    long long e2e_g_ = (long long)(got), e2e_w_ = (long long)(want);               \
    if (e2e_g_ != e2e_w_) E2E_FAIL("%s: got %lld, want %lld", what, e2e_g_, e2e_w_); \
  } while (0)
/* String got/want check. */
#define E2E_STREQ(what, got, want)                                                 \
  do {                                                                             \
    const char *e2e_g_ = (got), *e2e_w_ = (want);                                  \
    if (strcmp(e2e_g_, e2e_w_) != 0)                                               \
      E2E_FAIL("%s: got \"%s\", want \"%s\"", what, e2e_g_, e2e_w_);               \
  } while (0)

/* Archive and more process control (harness_archive.c). Functions named
 * *_with take any client, never fail the test themselves and are
 * thread-safe: they return the gRPC status, or -1 when the call could not
 * be made, with the reason in msg. The others use the harness's client for
 * `who` and fail the test when the call cannot be made. */
/* A client of its own for identity who (worker threads); fails the test. */
kyso_client *e2e_client_open(e2e *e, e2e_ident who);
/* e2e_call on any client. */
int e2e_call_with(kyso_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                  ProtobufCMessage **resp, char *msg, size_t msg_size);
/* Signer.Sign of a whole request (archive_id, skip_archive ...). */
int e2e_sign_with(kyso_client *c, const Kyso__V1__SignRequest *req, int64_t timeout_ms,
                  Kyso__V1__SignResponse **resp, char *msg, size_t msg_size);
/* Archive.Put: the header in the first message, then chunks of at most
 * 1 MiB, from memory (path NULL) or streamed from the file path (data
 * ignored). *info (OK only, may be NULL) is the caller's to free with
 * kyso__v1__document_info__free_unpacked. */
int e2e_put_with(kyso_client *c, const Kyso__V1__PutHeader *hdr, const uint8_t *data, size_t len,
                 const char *path, int64_t timeout_ms, Kyso__V1__DocumentInfo **info, char *msg,
                 size_t msg_size);
/* What an Archive.Get brought back. */
typedef struct e2e_got {
  Kyso__V1__DocumentInfo *info; /* the first message's info, NULL if none came */
  uint64_t size;                /* chunk bytes received (also before an error) */
  char sha256[65];              /* of those bytes */
  size_t chunks, max_chunk;     /* chunk messages and the largest one */
  uint8_t *data;                /* the bytes, when asked to keep them */
} e2e_got;
/* Archive.Get of id; keep_max > 0 keeps up to that many bytes in g->data
 * (more is an error), 0 only hashes; out_path (may be NULL) also gets the
 * bytes written. g is filled whatever the status; free with e2e_got_free. */
int e2e_get_with(kyso_client *c, const char *id, size_t keep_max, const char *out_path,
                 int64_t timeout_ms, e2e_got *g, char *msg, size_t msg_size);
void e2e_got_free(e2e_got *g);
/* Archive.Stat. */
int e2e_stat_with(kyso_client *c, const char *id, int include_signatures, int64_t timeout_ms,
                  Kyso__V1__DocumentInfo **info, char *msg, size_t msg_size);
/* What an Archive.Scrub streamed back. */
typedef struct e2e_scrub_out {
  int done;                     /* the final message came */
  uint64_t problems, blobs, bytes, documents, signatures;
  char *problem_text;           /* "KIND ID: PROBLEM\n" per problem (malloc()ed) */
} e2e_scrub_out;
int e2e_scrub(e2e *e, e2e_ident who, e2e_scrub_out *out, char *msg, size_t msg_size);
void e2e_scrub_out_free(e2e_scrub_out *s);
/* Deterministic document bytes: seed in the first 8 bytes (when len >= 8),
 * then a xorshift stream from seed, continued from byte offset off (so a
 * big document can be made in pieces: e2e_fill(buf, n, seed, off)). */
void e2e_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t off);
/* Runs the kyso CLI as identity who against the running kysod, with
 * stdout+stderr to out_file: the exit status (-1 if it did not exit). */
int e2e_kyso(e2e *e, e2e_ident who, const char *out_file, const char *const *args);
/* The same, in the background: its pid, for e2e_wait_exit or a kill. */
pid_t e2e_kyso_start(e2e *e, e2e_ident who, const char *out_file, const char *const *args);
/* SIGKILL kysod, reap it, close the harness's clients (not others). */
void e2e_kill9(e2e *e);
/* A "Vm..." field of /proc/PID/status of kysod, in KiB; fails the test if absent. */
long e2e_proc_kib(e2e *e, const char *field);
/* Resets kysod's VmHWM to its current RSS (clear_refs 5); 0 if it did. */
int e2e_reset_peak_rss(e2e *e);
/* e2e_stop, but error lines containing one of allowed (NULL-terminated)
 * are expected (e.g. a scrub that reports planted damage). */
int e2e_stop_allowing(e2e *e, const char *const *allowed);
/* e2e_check_log_clean except lines with one of allowed (may be NULL). */
void e2e_check_log_clean_except(e2e *e, const char *const *allowed);
/* Number of files under dir whose name ends with suffix and whose bytes
 * contain needle; the first such path into found (may be NULL). */
int e2e_find_in_files(const char *dir, const char *suffix, const uint8_t *needle, size_t n,
                      char *found, size_t found_size, long *offset);
/* Flips one bit of the byte at offset in path (in place). */
void e2e_flip_byte(const char *path, long offset);
/* Sum of the sizes of the regular files under dir (not following links). */
uint64_t e2e_dir_bytes(const char *dir);

/* Time-stamps (harness_ts.c). Parsing here uses OpenSSL directly, never
 * kyso's signer, so tests do not check kyso with itself. */
/* TimeStamp.Stamp of a DER query on any client (thread-safe, never fails
 * the test): the gRPC status, or -1 when no call could be made. */
int e2e_stamp_with(kyso_client *c, const uint8_t *query, size_t len, int64_t timeout_ms,
                   struct Kyso__V1__StampResponse **resp, char *msg, size_t msg_size);
/* A DER TimeStampReq over SHA-256(data), certReq as given, with a random
 * nonce (malloc()ed; NULL on failure). */
uint8_t *e2e_ts_query(const uint8_t *data, size_t len, int cert_req, size_t *query_len);
/* What a TimeStampResp (is_token 0) or a bare token (1) says. */
typedef struct e2e_ts {
  int status;             /* PKIStatus, -1 if it does not parse */
  uint32_t failure_bits;  /* PKIFailureInfo bit n as 1u << n */
  int has_token;
  uint64_t serial;        /* 0 if it does not fit 64 bits */
  int64_t gen_ms;         /* genTime, ms since the epoch */
  char policy[128];
} e2e_ts;
int e2e_ts_parse(const uint8_t *der, size_t len, int is_token, e2e_ts *out);
/* `openssl ts -verify` of a reply (or with token_in, a bare token) over the
 * data file against DIR/pki/root.pem with DIR/pki/chain.pem untrusted, pki
 * being e's (or pki_dir when non-NULL): the exit status; its output goes to
 * work/ts-verify.log. */
int e2e_openssl_ts_verify(e2e *e, const char *pki_dir, const char *reply, const char *data,
                          int token_in);
/* Writes the first SignerInfo's signature-time-stamp token and signature
 * value of a DER CMS to the two paths: 1 if the token is there, 0 if the
 * signature has none, -1 if the CMS does not parse. */
int e2e_cms_timestamp(const uint8_t *cms, size_t len, const char *token_path,
                      const char *sigvalue_path);
/* grpc.health.v1 Check of service: 1 SERVING, 2 NOT_SERVING, -status on a
 * gRPC error (e.g. -5 for an unknown service). */
int e2e_health(e2e *e, const char *service);
/* A loopback TCP port that was free a moment ago. */
int e2e_free_port(void);
/* `curl` POST of body_file to http://127.0.0.1:port path with content_type
 * (NULL: none), or a GET when body_file is NULL; the reply body to out_file
 * and headers to out_file.hdr. Returns the HTTP status, -1 if curl failed. */
int e2e_http(int port, const char *path, const char *method, const char *content_type,
             const char *body_file, const char *out_file);

/* extra_env for e2e_start in tests that measure kysod's RSS: in an ASan
 * build a small quarantine, or freed chunks would count as resident
 * (harmless otherwise); the user's ASAN_OPTIONS come first. Static. */
const char *const *e2e_env_rss(void);

/* kysod's path, the kyso CLI's path, the fixtures and samples directories:
 * from the environment (KYSOD, KYSO_CLI, KYSO_FIXTURES, KYSO_SAMPLES) or the
 * build. */
const char *e2e_kysod_path(void);
const char *e2e_cli_path(void);
const char *e2e_fixtures_dir(void);
const char *e2e_samples_dir(void);

extern const char *const e2e_grpc_status_names[17];

#endif
