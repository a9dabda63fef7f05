/* e2e_cluster_orphans: a document's bytes copied to a node for a write that
 * never committed (here: node 1 copies them to node 2 with Peer.PutBlob,
 * as a leader does before it proposes, and proposes nothing) are collected
 * by node 2 once its grace period has passed (shortened for the test with
 * KYSO_TEST_ORPHAN_GRACE_MS), while every recorded document stays, bytes
 * and all, on every node. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "harness_cluster.h"
#include "kyso/v1/peer.pb-c.h"

#define N 3
#define DOCS 4
#define ORPHAN_SIZE (3 * 1024 * 1024 + 17)

static e2e_cluster CL;

static int setup(void **state) {
  (void)state;
  const char *extra[N] = {"stale_reads = true\n", "stale_reads = true\n", "stale_reads = true\n"};
  assert_int_equal(e2e_cluster_new(&CL, N, N, extra), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_cluster_free(&CL);
  return 0;
}

/* A client of node `to` that presents node `as`'s server certificate: a
 * peer, as the nodes call each other. */
static kyso_client *peer_client(int as, int to) {
  char target[96], cert[320], key[320], ca[320];
  kyso_client *c = NULL;
  kyso_err err = {0};
  snprintf(target, sizeof(target), "127.0.0.1:%d", CL.rpc_port[to]);
  snprintf(cert, sizeof(cert), "%s/server.pem", CL.node[as]->pki);
  snprintf(key, sizeof(key), "%s/server.key", CL.node[as]->pki);
  snprintf(ca, sizeof(ca), "%s/root.pem", CL.node[to]->pki);
  kyso_client_opts o = {.target = target, .ca_file = ca, .cert_file = cert, .key_file = key,
                        .server_name = "localhost"};
  if (kyso_client_open(&o, &c, &err) != KYSO_OK) E2E_FAIL("peer client: %s", err.msg);
  return c;
}

static void put_blob(kyso_client *c, const uint8_t *data, size_t len, const char *hex) {
  kyso_stream *s = NULL;
  kyso_err err = {0};
  kyso_reply r = {0};
  if (kyso_stream_open(c, "/kyso.v1.Peer/PutBlob", 30000, &s, &err) != KYSO_OK)
    E2E_FAIL("PutBlob: %s", err.msg);
  for (size_t off = 0; off < len || off == 0;) {
    Kyso__V1__BlobChunk m = KYSO__V1__BLOB_CHUNK__INIT;
    size_t n = len - off > (1u << 20) ? (1u << 20) : len - off;
    if (off == 0) {
      m.sha256 = (char *)hex;
      m.size = len;
    }
    m.chunk.data = (uint8_t *)data + off;
    m.chunk.len = n;
    uint8_t *buf = malloc(kyso__v1__blob_chunk__get_packed_size(&m) + 1);
    size_t bl = kyso__v1__blob_chunk__pack(&m, buf);
    kyso_status st = kyso_stream_send(s, buf, bl, &err);
    free(buf);
    if (st != KYSO_OK) break;
    off += n;
    if (n == 0) break;
  }
  if (kyso_stream_finish(s, &r, &err) != KYSO_OK) E2E_FAIL("PutBlob: %s", err.msg);
  if (r.grpc_status != 0) E2E_FAIL("PutBlob: status %d (%s)", r.grpc_status, r.message);
  kyso_reply_free(&r);
}

static int has_blob(kyso_client *c, const char *hex) {
  Kyso__V1__BlobRef ref = KYSO__V1__BLOB_REF__INIT;
  kyso_reply r = {0};
  kyso_err err = {0};
  uint8_t buf[128];
  ref.sha256 = (char *)hex;
  size_t n = kyso__v1__blob_ref__pack(&ref, buf);
  if (kyso_client_call(c, "/kyso.v1.Peer/HasBlob", buf, n, 10000, &r, &err) != KYSO_OK)
    E2E_FAIL("HasBlob: %s", err.msg);
  if (r.grpc_status != 0) E2E_FAIL("HasBlob: status %d (%s)", r.grpc_status, r.message);
  Kyso__V1__BlobState *bs = kyso__v1__blob_state__unpack(NULL, r.len, r.data);
  if (bs == NULL) E2E_FAIL("HasBlob: not a BlobState");
  int present = bs->present;
  kyso__v1__blob_state__free_unpacked(bs, NULL);
  kyso_reply_free(&r);
  return present;
}

static void test_uncommitted_copy_is_collected(void **state) {
  (void)state;
  int up[N] = {1, 1, 1};
  const char *env[] = {"KYSO_TEST_ORPHAN_GRACE_MS=1500", NULL};
  char ids[DOCS][65], msg[512], orphan_hex[65];
  for (int i = 0; i < N; i++) e2e_start(CL.node[i], env);
  int leader = e2e_cluster_wait_leader(&CL, up);
  int holder = (leader + 1) % N;

  /* Recorded documents: these must survive every pass. */
  for (int k = 0; k < DOCS; k++) {
    uint8_t doc[5000];
    char rid[32];
    Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
    Kyso__V1__DocumentInfo *info = NULL;
    e2e_fill(doc, sizeof(doc), 900 + (uint64_t)k, 0);
    snprintf(rid, sizeof(rid), "orph-%d", k);
    hdr.request_id = rid;
    int st = e2e_put_with(CL.node[leader]->clients[E2E_DMS], &hdr, doc, sizeof(doc), NULL, 30000,
                          &info, msg, sizeof(msg));
    if (st != 0) E2E_FAIL("Put: status %d (%s)", st, msg);
    snprintf(ids[k], 65, "%s", info->id);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }

  /* The copy of a write that never committed. */
  uint8_t *orphan = malloc(ORPHAN_SIZE);
  char needle[96];
  e2e_fill(orphan, ORPHAN_SIZE, 4242, 0);
  e2e_sha256_hex(orphan, ORPHAN_SIZE, orphan_hex);
  snprintf(needle, sizeof(needle), "collected blob %s", orphan_hex);
  kyso_client *peer = peer_client(leader, holder);
  put_blob(peer, orphan, ORPHAN_SIZE, orphan_hex);
  free(orphan);
  int64_t stored = e2e_now_ms();
  if (!has_blob(peer, orphan_hex)) E2E_FAIL("node %d does not hold the copy it took", holder + 1);

  /* Gone once the grace period has passed; never before it. */
  int64_t end = stored + E2E_CLUSTER_WAIT_MS;
  int64_t gone = 0;
  while (e2e_now_ms() < end) {
    /* Asking does not count as a use here: HasBlob reads the manifest and
     * so restarts the period; poll the node's log instead. */
    if (e2e_file_contains(CL.node[holder]->stderr_path, needle)) {
      gone = e2e_now_ms();
      break;
    }
    e2e_pause_ms(50);
  }
  if (gone == 0) E2E_FAIL("node %d did not collect the uncommitted copy", holder + 1);
  if (gone - stored < 1500) E2E_FAIL("collected after %lld ms, before the grace period",
                                     (long long)(gone - stored));
  E2E_EQ("the copy is gone", has_blob(peer, orphan_hex), 0);
  printf("the uncommitted copy was collected %lld ms after it was stored (grace 1500 ms)\n",
         (long long)(gone - stored));
  kyso_client_close(peer);

  /* Every recorded document is still served, bytes checked, by every node. */
  for (int i = 0; i < N; i++) {
    e2e_cluster_wait_applied(&CL, i, e2e_cluster_applied(&CL, leader));
    for (int k = 0; k < DOCS; k++) {
      int64_t until = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
      for (;;) {
        e2e_got g;
        memset(&g, 0, sizeof(g));
        int st = e2e_get_with(CL.node[i]->clients[E2E_ARCH], ids[k], 0, NULL, 10000, &g, msg,
                              sizeof(msg));
        int same = st == 0 && strcmp(g.sha256, ids[k]) == 0;
        e2e_got_free(&g);
        if (same) break;
        if (e2e_now_ms() > until)
          E2E_FAIL("node %d no longer serves %s: status %d (%s)", i + 1, ids[k], st, msg);
        e2e_pause_ms(50);
      }
    }
  }
  e2e_cluster_check_digests(&CL, up, "after the collection");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uncommitted_copy_is_collected),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
