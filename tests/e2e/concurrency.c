/* e2e_concurrency: 4 client threads x 100 signatures with two keys (one
 * RSA, one EC) against one kysod; two threads share the harness's client,
 * two have their own. Every call succeeds and every signature verifies
 * with the openssl command line. */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define THREADS 4
#define PER_THREAD 100
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL

static e2e *E;
static char out_dir[512];
static pthread_barrier_t go;

typedef struct worker {
  int index;
  kyso_client *client;
  int own_client;
  const char *account;
  int ok;
  char error[1024]; /* first failure; threads must not fail the test themselves */
  int64_t elapsed_ms;
} worker;

static int write_all(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return -1;
  size_t w = fwrite(p, 1, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

/* One request's worth of work; returns 0 or fills w->error. */
static int sign_one(worker *w, int seq) {
  uint8_t doc[2048];
  size_t len = 64 + (size_t)(seq * 131 + w->index * 17) % (sizeof(doc) - 64);
  int n = snprintf((char *)doc, 64, "thread %d document %d\n", w->index, seq);
  RAND_bytes(doc + n, (int)(len - (size_t)n));

  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  e2e_key_ref(&ref, PERSONAL, w->account);
  req.key = &ref;
  req.document.data = doc;
  req.document.len = len;
  size_t plen = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = malloc(plen);
  protobuf_c_message_pack(&req.base, buf);
  kyso_reply reply = {0};
  kyso_err err = {0};
  kyso_status cs = kyso_client_call(w->client, "/kyso.v1.Signer/Sign", buf, plen, 30000, &reply,
                                    &err);
  free(buf);
  int rc = -1;
  Kyso__V1__SignResponse *resp = NULL;
  char want_sha[65], path[600];
  if (cs != KYSO_OK) {
    snprintf(w->error, sizeof(w->error), "call #%d could not be made: %s", seq, err.msg);
    goto out;
  }
  if (reply.grpc_status != 0) {
    snprintf(w->error, sizeof(w->error), "call #%d: got status %d (%s), want OK", seq,
             reply.grpc_status, reply.message);
    goto out;
  }
  resp = kyso__v1__sign_response__unpack(NULL, reply.len, reply.data);
  e2e_sha256_hex(doc, len, want_sha);
  if (resp == NULL || strcmp(resp->document_sha256, want_sha) != 0) {
    snprintf(w->error, sizeof(w->error), "call #%d: got document_sha256 %s, want %s", seq,
             resp ? resp->document_sha256 : "(unparsable response)", want_sha);
    goto out;
  }
  int idx = w->index * PER_THREAD + seq;
  snprintf(path, sizeof(path), "%s/%d.doc", out_dir, idx);
  int wr = write_all(path, doc, len);
  snprintf(path, sizeof(path), "%s/%d.doc.p7s", out_dir, idx);
  if (wr != 0 || write_all(path, resp->signature.data, resp->signature.len) != 0) {
    snprintf(w->error, sizeof(w->error), "cannot write %s", path);
    goto out;
  }
  rc = 0;
out:
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  kyso_reply_free(&reply);
  return rc;
}

static void *run_worker(void *arg) {
  worker *w = arg;
  pthread_barrier_wait(&go);
  int64_t t0 = kyso_now_ms();
  for (int i = 0; i < PER_THREAD; i++) {
    if (sign_one(w, i) != 0) break;
    w->ok++;
  }
  w->elapsed_ms = kyso_now_ms() - t0;
  return NULL;
}

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, "conc.ec", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  e2e_provision_key(E, PERSONAL, "conc.rsa", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048);
  snprintf(out_dir, sizeof(out_dir), "%s", e2e_path(E, "work/concurrent"));
  if (mkdir(out_dir, 0700) != 0) E2E_FAIL("mkdir %s", out_dir);
}

static void concurrent_signing(void **state) {
  (void)state;
  worker w[THREADS];
  pthread_t tid[THREADS];
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", E->port);
  memset(w, 0, sizeof(w));
  for (int i = 0; i < THREADS; i++) {
    w[i].index = i;
    w[i].account = i % 2 ? "conc.rsa" : "conc.ec";
    w[i].own_client = i >= 2;
    w[i].client = E->clients[E2E_DMS];
    if (w[i].own_client) {
      kyso_err err = {0};
      kyso_client_opts o = {.target = target,
                            .ca_file = e2e_path(E, "pki/root.pem"),
                            .cert_file = e2e_path(E, "pki/client.pem"),
                            .key_file = e2e_path(E, "pki/client.key"),
                            .server_name = "localhost"};
      if (kyso_client_open(&o, &w[i].client, &err) != KYSO_OK)
        E2E_FAIL("kyso_client_open for thread %d: %s", i, err.msg);
    }
  }
  pthread_barrier_init(&go, NULL, THREADS + 1);
  for (int i = 0; i < THREADS; i++)
    if (pthread_create(&tid[i], NULL, run_worker, &w[i]) != 0) E2E_FAIL("pthread_create");
  int64_t t0 = kyso_now_ms();
  pthread_barrier_wait(&go);
  for (int i = 0; i < THREADS; i++) pthread_join(tid[i], NULL);
  int64_t t1 = kyso_now_ms();
  pthread_barrier_destroy(&go);
  int total = 0;
  for (int i = 0; i < THREADS; i++) {
    if (w[i].own_client) kyso_client_close(w[i].client);
    fprintf(stderr, "e2e: thread %d (%s, %s client): %d/%d signed in %lld ms\n", i, w[i].account,
            w[i].own_client ? "own" : "shared", w[i].ok, PER_THREAD, (long long)w[i].elapsed_ms);
    total += w[i].ok;
  }
  fprintf(stderr, "e2e: %d signatures from %d threads in %lld ms (%.0f/s)\n", total, THREADS,
          (long long)(t1 - t0), t1 > t0 ? total * 1000.0 / (double)(t1 - t0) : 0.0);
  for (int i = 0; i < THREADS; i++)
    if (w[i].ok != PER_THREAD)
      E2E_FAIL("thread %d: got %d successful signs, want %d; first failure: %s", i, w[i].ok,
               PER_THREAD, w[i].error);

  long jobs = sysconf(_SC_NPROCESSORS_ONLN);
  int rc = e2e_openssl_verify_many(E, out_dir, THREADS * PER_THREAD, jobs > 0 ? (int)jobs : 2);
  fprintf(stderr, "e2e: openssl verified %d signatures in %lld ms\n", THREADS * PER_THREAD,
          (long long)(kyso_now_ms() - t1));
  E2E_EQ("openssl verification of every signature (0 = all verified)", rc, 0);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(concurrent_signing),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_concurrency", tests, setup, teardown);
}
