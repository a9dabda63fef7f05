/* kyso tests — an in-process rpc_server with a small method table, driven by
 * kyso_client. Handlers synchronise with the test through semaphores, never
 * through sleeps. */
#ifndef KYSO_TESTS_RPC_HARNESS_H
#define KYSO_TESTS_RPC_HARNESS_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#include "kyso/client.h"
#include "kyso/rpc.h"

#define M_ECHO "/kyso.test.Echo/Echo"         /* replies with the request */
#define M_SLOW "/kyso.test.Echo/Slow"         /* echo, once the test posts slow_release */
#define M_DEADLINE "/kyso.test.Echo/Deadline" /* waits out the deadline, DEADLINE_EXCEEDED */
#define M_DENIED "/kyso.test.Echo/Denied"     /* the hook refuses it: PERMISSION_DENIED */
#define M_WHOAMI "/kyso.test.Echo/Whoami"     /* needs a client cert; replies with its CN */

#define DENY_MSG "account 'test' may not call the deny operation"
#define NOCERT_MSG "no client certificate presented"

/* What handlers and the hook saw, for the tests to assert on. */
typedef struct h_state {
  pthread_mutex_t mu;
  sem_t slow_entered;      /* posted when a Slow handler starts */
  sem_t slow_release;      /* posted by the test to let one Slow handler finish */
  sem_t deadline_done;     /* posted after the Deadline handler finished its call */
  int hook_calls;
  int handler_calls;
  int had_cert;            /* the last hook call saw a certificate */
  uint8_t sha256[32];      /* ... with this fingerprint */
  char operation[64];      /* the last operation the hook saw */
  int64_t echo_remaining_ms; /* rpc_call_remaining_ms in the last Echo handler */
  int64_t deadline_first_ms; /* remaining_ms when the Deadline handler started */
  int64_t deadline_last_ms;  /* ... and when it gave up */
} h_state;

extern h_state H;

typedef struct harness {
  rpc_server *srv;
  kyso_client *cli;
  int port;
  char target[64];
} harness;

/* Resets H (once per process, before any server starts). */
void h_init(void);
/* Starts a plaintext server on 127.0.0.1:0 (opts may set TLS and sizes; NULL
 * for defaults) and, unless no_client, an insecure client to it. */
int h_start(harness *h, const rpc_server_opts *opts, int no_client);
void h_stop(harness *h, int grace_ms);
/* A client to the harness' port; insecure when ca_file is NULL. */
kyso_client *h_client(const harness *h, const char *ca_file, const char *cert_file,
                      const char *key_file, size_t max_message);
/* One call; fails the test if the call could not be made at all. */
kyso_reply h_call(kyso_client *c, const char *method, const void *req, size_t len,
                  int64_t timeout_ms);
/* Reads a field of H under its lock. */
int64_t h_read(const void *field, int is_i64);
#define H_INT(f) ((int)h_read(&H.f, 0))
#define H_I64(f) h_read(&H.f, 1)
void h_hook_snapshot(int *had_cert, uint8_t sha256[32], char *operation, size_t op_size);

/* Throw-away PKI from tests/fixtures/pki.sh in a fresh temporary directory. */
int h_pki_make(char *dir, size_t size);
void h_pki_remove(const char *dir);
/* Lower-case hex SHA-256 of the DER of a PEM certificate, computed by the
 * openssl command line (a tool we did not write). */
int h_openssl_fingerprint(const char *pem_path, char hex[65]);
/* Writes the concatenation of two files to out. */
int h_concat(const char *a, const char *b, const char *out);

#endif
