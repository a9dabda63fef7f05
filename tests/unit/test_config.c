/* Unit tests: configuration loading — defaults, relative paths, errors that
 * name file and line, callers and roles, PIN sources. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyso/config.h"

static char dir[] = "/tmp/kyso-test-config-XXXXXX";

static void write_file(const char *name, const char *text, mode_t mode) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

static kyso_status load(const char *text, kyso_config *cfg, kyso_err *err) {
  char path[512];
  write_file("kyso.conf", text, 0600);
  snprintf(path, sizeof(path), "%s/kyso.conf", dir);
  return kyso_config_load(path, cfg, err);
}

static void test_defaults_and_paths(void **state) {
  (void)state;
  kyso_config cfg;
  kyso_err err = {0};
  assert_int_equal(load("[tls]\ncert = pki/server.pem\nkey = /abs/server.key\n", &cfg, &err), KYSO_OK);
  assert_string_equal(cfg.listen, "127.0.0.1:7443");
  assert_int_equal(cfg.worker_threads, 4);
  assert_int_equal(cfg.peer_cache_seconds, 60);
  char want[600];
  char *real = realpath(dir, NULL);
  snprintf(want, sizeof(want), "%s/pki/server.pem", real);
  free(real);
  assert_string_equal(cfg.tls_cert, want);
  assert_string_equal(cfg.tls_key, "/abs/server.key");
  kyso_config_free(&cfg);
}

static void test_errors_name_the_line(void **state) {
  (void)state;
  static const struct { const char *text; const char *want; } cases[] = {
      {"[server]\nlisten = x\nworkers = 3\n", ":3: unknown setting 'workers' in [server]"},
      {"[server]\nworker_threads = 0\n", ":2: '0' is not a number between 1 and 256"},
      {"[hsm]\nsessions = lots\n", "is not a number"},
      {"[caller.dms]\nroles = god\n", "unknown role 'god'"},
      {"[caller.dms]\nfingerprint = 12:34\n", "fingerprint must be a SHA-256"},
      {"[caller.dms]\nroles = service\n", "needs both 'fingerprint' and 'roles'"},
      {"[nonsense]\na = b\n", "unknown setting 'a' in [nonsense]"},
      {"[tls]\nclient_ca = ca.pem\npeer_cache_seconds = 3601\n",
       ":3: '3601' is not a number between 0 and 3600"},
      {"[tls]\npeer_cache_seconds = -1\n", ":2: '-1' is not a number between 0 and 3600"},
      {"[tls]\npeer_cache_second = 5\n", ":2: unknown setting 'peer_cache_second' in [tls]"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_config cfg;
    kyso_err err = {0};
    kyso_status got = load(cases[i].text, &cfg, &err);
    if (got != KYSO_INVALID_ARGUMENT || strstr(err.msg, cases[i].want) == NULL)
      fail_msg("case %zu: got %s \"%s\", want INVALID_ARGUMENT containing \"%s\"", i,
               kyso_strerror(got), err.msg, cases[i].want);
    kyso_config_free(&cfg);
  }
}

static void test_peer_cache_seconds(void **state) {
  (void)state;
  static const struct { const char *text; unsigned want; } cases[] = {
      {"[tls]\npeer_cache_seconds = 0\n", 0},
      {"[tls]\npeer_cache_seconds = 3600\n", 3600},
      {"[tls]\npeer_cache_seconds = 5\n", 5},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_config cfg;
    kyso_err err = {0};
    kyso_status got = load(cases[i].text, &cfg, &err);
    if (got != KYSO_OK || cfg.peer_cache_seconds != cases[i].want)
      fail_msg("case %zu: got %s \"%s\" and %u, want OK and %u", i, kyso_strerror(got), err.msg,
               cfg.peer_cache_seconds, cases[i].want);
    kyso_config_free(&cfg);
  }
}

static void test_callers(void **state) {
  (void)state;
  kyso_config cfg;
  kyso_err err = {0};
  assert_int_equal(load("[caller.dms]\n"
                        "fingerprint = 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
                        "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\n"
                        "roles = service, archivist\n",
                        &cfg, &err),
                   KYSO_OK);
  assert_int_equal(cfg.caller_count, 1);
  assert_string_equal(cfg.callers[0].name, "dms");
  assert_int_equal(cfg.callers[0].roles, KYSO_ROLE_SERVICE | KYSO_ROLE_ARCHIVIST);
  assert_int_equal(cfg.callers[0].cert_sha256[1], 0x11);
  assert_int_equal(cfg.callers[0].cert_sha256[31], 0xff);
  kyso_config_free(&cfg);
}

static void test_cluster(void **state) {
  (void)state;
  kyso_config cfg;
  kyso_err err = {0};
  assert_int_equal(load("[server]\nnode_id = 2\n[cluster]\n"
                        "member = 1 10.0.0.1:7601 10.0.0.1:7443\n"
                        "member = 2 10.0.0.2:7601 10.0.0.2:7443\n"
                        "member = 3 10.0.0.3:7601 10.0.0.3:7443\n"
                        "election_ms = 800\nheartbeat_ms = 80\nstale_reads = yes\n"
                        "snapshot_threshold = 64\nsnapshot_trailing = 32\nraft_dir = raft\n",
                        &cfg, &err),
                   KYSO_OK);
  assert_int_equal(cfg.member_count, 3);
  assert_int_equal(cfg.members[2].id, 3);
  assert_string_equal(cfg.members[1].raft, "10.0.0.2:7601");
  assert_string_equal(cfg.members[1].rpc, "10.0.0.2:7443");
  assert_int_equal(cfg.election_ms, 800);
  assert_int_equal(cfg.heartbeat_ms, 80);
  assert_int_equal(cfg.snapshot_threshold, 64);
  assert_int_equal(cfg.snapshot_trailing, 32);
  assert_true(cfg.stale_reads);
  assert_true(cfg.forward); /* the default */
  assert_false(cfg.cluster_join);
  assert_non_null(strstr(cfg.raft_dir, "/raft"));
  kyso_config_free(&cfg);
  assert_int_equal(load("[cluster]\nmember = 1 a:1 b:2\nforward = false\n", &cfg, &err), KYSO_OK);
  assert_false(cfg.forward);
  kyso_config_free(&cfg);

  static const struct { const char *text; const char *want; } bad[] = {
      {"[cluster]\nmember = 1 10.0.0.1:7601\n", "write: member = ID"},
      {"[cluster]\nmember = 0 a:1 b:2\n", "write: member = ID"},
      {"[cluster]\nmember = 1 a:1 b:2 extra\n", "write: member = ID"},
      {"[cluster]\nmember = 1 a:1 b:2\nmember = 1 c:1 d:2\n", "member 1 is listed twice"},
      {"[server]\nnode_id = 4\n[cluster]\nmember = 1 a:1 b:2\n", "no member with this node's id 4"},
      {"[cluster]\nmember = 1 a:1 b:2\nelection_ms = 300\nheartbeat_ms = 200\n",
       "at most half of election_ms"},
      {"[cluster]\njoin = maybe\n", "not true or false"},
      {"[cluster]\nforward = sometimes\n", "not true or false"},
      {"[cluster]\nvoters = 3\n", "unknown setting 'voters' in [cluster]"},
      {"[caller.n2]\nfingerprint = 00\nroles = peer,god\n", "unknown role 'god'"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(load(bad[i].text, &cfg, &err), KYSO_OK);
    if (strstr(err.msg, bad[i].want) == NULL)
      fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, bad[i].want);
    kyso_config_free(&cfg);
  }
  unsigned roles = 0;
  assert_int_equal(kyso_roles_parse("peer", &roles, &err), KYSO_OK);
  assert_int_equal(roles, KYSO_ROLE_PEER);
}

/* The shipped examples load as they are (paths need not exist to load). */
static void test_shipped_examples_load(void **state) {
  (void)state;
  static const char *const files[] = {"deploy/kyso.conf.example", "deploy/cluster/node1.conf",
                                      "deploy/cluster/node2.conf", "deploy/cluster/node3.conf"};
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    char path[1024];
    kyso_config cfg;
    kyso_err err = {0};
    snprintf(path, sizeof(path), "%s/%s", KYSO_SOURCE_DIR, files[i]);
    if (kyso_config_load(path, &cfg, &err) != KYSO_OK) fail_msg("%s: %s", files[i], err.msg);
    if (i > 0) {
      assert_int_equal(cfg.member_count, 3);
      assert_int_equal(cfg.node_id, i);
      assert_string_equal(cfg.kek_label, "kyso-kek");
      assert_int_equal(cfg.orphan_grace_seconds, 86400);
    }
    kyso_config_free(&cfg);
  }
}

static void test_pin_sources(void **state) {
  (void)state;
  kyso_config cfg;
  kyso_err err = {0};
  char pin[64];
  write_file("pin", "123456\n", 0600);
  assert_int_equal(load("[hsm]\npin_file = pin\n", &cfg, &err), KYSO_OK);
  assert_int_equal(kyso_config_read_pin(&cfg, pin, sizeof(pin), &err), KYSO_OK);
  assert_string_equal(pin, "123456");
  write_file("pin", "123456\n", 0644);
  assert_int_equal(kyso_config_read_pin(&cfg, pin, sizeof(pin), &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "chmod 600"));
  kyso_config_free(&cfg);

  assert_int_equal(load("[hsm]\npin_env = KYSO_TEST_PIN\n", &cfg, &err), KYSO_OK);
  unsetenv("KYSO_TEST_PIN");
  assert_int_equal(kyso_config_read_pin(&cfg, pin, sizeof(pin), &err), KYSO_INVALID_ARGUMENT);
  setenv("KYSO_TEST_PIN", "9999", 1);
  assert_int_equal(kyso_config_read_pin(&cfg, pin, sizeof(pin), &err), KYSO_OK);
  assert_string_equal(pin, "9999");
  kyso_config_free(&cfg);
}

int main(void) {
  if (mkdtemp(dir) == NULL) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_paths),
      cmocka_unit_test(test_errors_name_the_line),
      cmocka_unit_test(test_peer_cache_seconds),
      cmocka_unit_test(test_callers),
      cmocka_unit_test(test_pin_sources),
      cmocka_unit_test(test_cluster),
      cmocka_unit_test(test_shipped_examples_load),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0) rc = 1;
  return rc;
}
