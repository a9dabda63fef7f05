/* kyso-bench-hsm — the raw PKCS#11 C_Sign rate of each key: N threads call
 * hsm_sign_digest through kyso's own hsm module (the session pool and key
 * map kysod uses) on one key for --duration seconds after --warmup, with the
 * mechanism kysod uses for that key type. The ceiling kysod's Sign is
 * compared with. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/config.h"
#include "kyso/hsm.h"
#include "kyso/limits.h"
#include "tool.h"

#define MAX_LABELS 64

static const char usage_text[] =
    "Usage: kyso-bench-hsm (--config FILE | --module SO --token LABEL --pin-file F)\n"
    "                      (--label KEY_LABEL [--label ...] | --label-prefix P --keys N)\n"
    "                      [OPTIONS]\n"
    "\n"
    "Measures the raw PKCS#11 C_Sign rate of each key: --threads threads sign\n"
    "SHA-256 digests with one key through kyso's hsm module (kysod's session pool\n"
    "and key map), for --warmup seconds (not counted), then --duration seconds.\n"
    "RSA keys sign with CKM_RSA_PKCS over a SHA-256 DigestInfo (PKCS#1 v1.5, what\n"
    "kysod uses by default), EC P-256 keys with CKM_ECDSA. One result per --label,\n"
    "the keys in turn. kysod may run meanwhile; it then shares the token.\n"
    "\n"
    "Token (flags override the [hsm] section of --config):\n"
    "  -c, --config FILE     kysod's configuration: module, token and PIN source\n"
    "      --module SO       PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)\n"
    "      --token LABEL     the token's label\n"
    "      --pin-file F      file holding the user PIN (mode 0600)\n"
    "  SoftHSM finds its tokens through SOFTHSM2_CONF, as for kysod.\n"
    "\n"
    "Run:\n"
    "  -l, --label KEY_LABEL key to sign with, e.g. kyso/personal/bench.ec.0\n"
    "                        (repeat for more keys, at most 64)\n"
    "      --label-prefix P  with --keys N: one more result, signing round robin over\n"
    "      --keys N          the N keys P0 .. P(N-1) (e.g. kyso/personal/bench.many.ec.),\n"
    "                        each thread on its own key in turn, as kyso-bench --keys\n"
    "                        does: the HSM's own cost of many keys\n"
    "  -t, --threads N       signing threads, one pooled session each (default 4,\n"
    "                        at most 64)\n"
    "      --duration S      measured seconds per key (default 10)\n"
    "      --warmup S        seconds per key run first and not counted (default 2)\n"
    "      --json FILE       write the results as JSON\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit status: 0 when every key was measured; 1 when the token, a key or a\n"
    "signature failed (the first error is printed); 2 on a usage error.\n";

enum { O_MODULE = 1, O_TOKEN, O_PIN_FILE, O_DURATION, O_WARMUP, O_JSON, O_PREFIX, O_KEYS };

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},   {"module", required_argument, NULL, O_MODULE},
    {"token", required_argument, NULL, O_TOKEN}, {"pin-file", required_argument, NULL, O_PIN_FILE},
    {"label", required_argument, NULL, 'l'},    {"threads", required_argument, NULL, 't'},
    {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"label-prefix", required_argument, NULL, O_PREFIX},
    {"keys", required_argument, NULL, O_KEYS},
    {"json", required_argument, NULL, O_JSON},  {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

typedef struct args {
  const char *config, *module, *token, *pin_file, *json;
  const char *labels[MAX_LABELS];
  size_t nlabels;
  const char *prefix; /* with nkeys: the round-robin run */
  uint64_t nkeys;
  uint64_t threads;
  double duration, warmup;
} args;

/* One run (one key, or prefix0..prefix(nkeys-1) in turn), shared by its
 * threads. */
typedef struct run {
  hsm *h;
  const char *label;
  const char *prefix;
  uint64_t nkeys;
  uint64_t threads;
  hsm_mech mech;
  atomic_int stop;
  pthread_mutex_t mu;
  int failed;
  kyso_err first_err; /* under mu */
} run;

/* One thread's counters, read by main while the thread runs. */
typedef struct worker {
  run *r;
  unsigned id;
  _Atomic uint64_t ops;
  _Atomic uint64_t busy_ns; /* summed time inside hsm_sign_digest */
  pthread_t thread;
} worker;

/* -1 to go on, or the exit status (0 after --help). */
static int parse_args(int argc, char **argv, args *a) {
  int opt;
  memset(a, 0, sizeof(*a));
  a->threads = 4;
  a->duration = 10;
  a->warmup = 2;
  while ((opt = getopt_long(argc, argv, "c:l:t:h", longopts, NULL)) != -1) {
    int rc = 0;
    switch (opt) {
      case 'c': a->config = optarg; break;
      case O_MODULE: a->module = optarg; break;
      case O_TOKEN: a->token = optarg; break;
      case O_PIN_FILE: a->pin_file = optarg; break;
      case 'l':
        if (a->nlabels == MAX_LABELS) return tool_usage_error("at most %d --label", MAX_LABELS);
        a->labels[a->nlabels++] = optarg;
        break;
      case 't':
        rc = tool_parse_count("--threads", optarg, 1, KYSO_HSM_MAX_SESSIONS, 0, &a->threads);
        break;
      case O_DURATION: rc = tool_parse_seconds("--duration", optarg, 0, &a->duration); break;
      case O_WARMUP: rc = tool_parse_seconds("--warmup", optarg, 1, &a->warmup); break;
      case O_JSON: a->json = optarg; break;
      case O_PREFIX: a->prefix = optarg; break;
      case O_KEYS: rc = tool_parse_count("--keys", optarg, 1, 10000000, 0, &a->nkeys); break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: fputs(usage_text, stderr); return 2;
    }
    if (rc) return rc;
  }
  if (optind < argc) return tool_usage_error("unexpected argument '%s'", argv[optind]);
  if ((a->prefix == NULL) != (a->nkeys == 0))
    return tool_usage_error("--label-prefix and --keys go together");
  if (a->nlabels == 0 && a->prefix == NULL)
    return tool_usage_error("give the key to sign with: --label kyso/personal/ACCOUNT");
  if (a->config == NULL && (a->token == NULL || a->pin_file == NULL))
    return tool_usage_error("give --config FILE, or --token LABEL and --pin-file F");
  return -1;
}

/* Module, token and PIN from --config, the flags over them. The PIN goes
 * into pin (pin_size bytes), which the caller wipes. */
static kyso_status open_token(const args *a, unsigned sessions, hsm **out, char *module,
                              size_t module_size, char *token, size_t token_size, kyso_err *err) {
  kyso_status st;
  kyso_config cfg;
  char pin[KYSO_MAX_PIN + 1];
  memset(&cfg, 0, sizeof(cfg));
  if (a->config != NULL && (st = kyso_config_load(a->config, &cfg, err)) != KYSO_OK) goto out;
  if (a->module != NULL) snprintf(cfg.hsm_module, sizeof(cfg.hsm_module), "%s", a->module);
  if (cfg.hsm_module[0] == '\0')
    snprintf(cfg.hsm_module, sizeof(cfg.hsm_module), "/usr/lib/softhsm/libsofthsm2.so");
  if (a->token != NULL) snprintf(cfg.hsm_token, sizeof(cfg.hsm_token), "%s", a->token);
  if (a->pin_file != NULL) {
    snprintf(cfg.pin_file, sizeof(cfg.pin_file), "%s", a->pin_file);
    cfg.pin_env[0] = '\0';
  }
  if ((st = kyso_config_read_pin(&cfg, pin, sizeof(pin), err)) != KYSO_OK) goto out;
  snprintf(module, module_size, "%s", cfg.hsm_module);
  snprintf(token, token_size, "%s", cfg.hsm_token);
  hsm_opts ho = {.module_path = cfg.hsm_module,
                 .token_label = cfg.hsm_token,
                 .pin = pin,
                 .max_sessions = sessions};
  st = hsm_open(&ho, out, err);
out:
  kyso_wipe(pin, sizeof(pin));
  kyso_config_free(&cfg);
  return st;
}

static void *sign_loop(void *arg) {
  worker *w = arg;
  run *r = w->r;
  uint8_t digest[32], sig[KYSO_MAX_SIGNATURE];
  char label[KYSO_MAX_LABEL + 1];
  kyso_err err = {0};
  /* Distinct digests: a thread id and a counter in an arbitrary pattern. */
  for (size_t i = 0; i < sizeof(digest); i++) digest[i] = (uint8_t)(0x5a ^ (i * 29));
  digest[0] = (uint8_t)w->id;
  for (uint64_t n = 0; !atomic_load_explicit(&r->stop, memory_order_relaxed); n++) {
    memcpy(digest + 8, &n, sizeof(n));
    size_t sig_len = sizeof(sig);
    const char *key = r->label;
    if (r->prefix != NULL) { /* thread w->id takes keys id, id+threads, ... */
      snprintf(label, sizeof(label), "%s%llu", r->prefix,
               (unsigned long long)((n * r->threads + w->id) % r->nkeys));
      key = label;
    }
    double t0 = tool_now();
    kyso_status st = hsm_sign_digest(r->h, key, r->mech, digest, sizeof(digest), sig,
                                     &sig_len, &err);
    uint64_t ns = (uint64_t)((tool_now() - t0) * 1e9);
    if (st != KYSO_OK) {
      pthread_mutex_lock(&r->mu);
      if (!r->failed) r->first_err = err;
      r->failed = 1;
      pthread_mutex_unlock(&r->mu);
      atomic_store(&r->stop, 1);
      break;
    }
    atomic_fetch_add_explicit(&w->busy_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

static void totals(worker *w, size_t n, uint64_t *ops, uint64_t *busy_ns) {
  *ops = *busy_ns = 0;
  for (size_t i = 0; i < n; i++) {
    *ops += atomic_load(&w[i].ops);
    *busy_ns += atomic_load(&w[i].busy_ns);
  }
}

/* Runs one key, or with prefix the keys prefix0..prefix(a->nkeys-1) round
 * robin (label names the first, whose type they all must share); adds its
 * result to results. 0, or 1 after saying why. */
static int measure(const args *a, hsm *h, const char *label, const char *prefix,
                   cJSON *results) {
  char shown[KYSO_MAX_LABEL + 32];
  hsm_key_info info;
  kyso_err err = {0};
  run r;
  worker *w = NULL;
  size_t started = 0;
  int rc = 1;
  memset(&r, 0, sizeof(r));
  pthread_mutex_init(&r.mu, NULL);
  if (hsm_key_info_get(h, label, &info, &err) != KYSO_OK) {
    fprintf(stderr, "%s: %s; list the token's keys with `kyso keys`\n", tool_name, err.msg);
    goto out;
  }
  int ec = info.type == HSM_KEY_EC_P256;
  r.h = h;
  r.label = label;
  r.prefix = prefix;
  r.nkeys = prefix != NULL ? a->nkeys : 1;
  r.threads = a->threads;
  if (prefix != NULL)
    snprintf(shown, sizeof(shown), "%s{0..%llu}", prefix, (unsigned long long)(a->nkeys - 1));
  else
    snprintf(shown, sizeof(shown), "%s", label);
  r.mech = ec ? HSM_MECH_ECDSA_SHA256 : HSM_MECH_RSA_PKCS1_SHA256;
  if ((w = calloc(a->threads, sizeof(*w))) == NULL) {
    fprintf(stderr, "%s: out of memory\n", tool_name);
    goto out;
  }
  for (; started < a->threads; started++) {
    w[started].r = &r;
    w[started].id = (unsigned)started;
    if (pthread_create(&w[started].thread, NULL, sign_loop, &w[started]) != 0) {
      fprintf(stderr, "%s: cannot start signing thread %zu\n", tool_name, started + 1);
      goto out;
    }
  }
  fprintf(stderr, "%s: %s (%s): %llu threads, %g s warm-up, %g s measured\n", tool_name,
          shown, hsm_key_type_id(info.type), (unsigned long long)a->threads, a->warmup,
          a->duration);
  tool_sleep(a->warmup);
  uint64_t ops0, busy0, ops1, busy1;
  totals(w, started, &ops0, &busy0);
  double t0 = tool_now(), end = t0 + a->duration, now;
  while (!atomic_load(&r.stop) && (now = tool_now()) < end) {
    tool_sleep(end - now < 1 ? end - now : 1);
    if ((now = tool_now()) >= end) break;
    uint64_t ops, busy;
    totals(w, started, &ops, &busy);
    fprintf(stderr, "%s:   %.0f s: %.1f C_Sign/s\n", tool_name, now - t0,
            (double)(ops - ops0) / (now - t0));
  }
  totals(w, started, &ops1, &busy1);
  double t1 = tool_now();
  atomic_store(&r.stop, 1);
  for (size_t i = 0; i < started; i++) pthread_join(w[i].thread, NULL);
  started = 0;
  if (r.failed) {
    fprintf(stderr, "%s: signing with '%s' failed: %s\n", tool_name, shown, r.first_err.msg);
    goto out;
  }
  uint64_t ops = ops1 - ops0;
  double elapsed = t1 - t0, rate = (double)ops / elapsed;
  double mean_ms = ops ? (double)(busy1 - busy0) / (double)ops / 1e6 : 0;
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "key_label", shown);
  cJSON_AddNumberToObject(j, "keys", (double)r.nkeys);
  cJSON_AddStringToObject(j, "algorithm", hsm_key_type_id(info.type));
  cJSON_AddStringToObject(j, "mechanism", ec ? "CKM_ECDSA over the SHA-256 digest"
                                             : "CKM_RSA_PKCS over a SHA-256 DigestInfo "
                                               "(PKCS#1 v1.5)");
  cJSON_AddNumberToObject(j, "ops", (double)ops);
  cJSON_AddNumberToObject(j, "elapsed_s", elapsed);
  cJSON_AddNumberToObject(j, "throughput", rate);
  cJSON_AddNumberToObject(j, "mean_latency_ms", mean_ms);
  cJSON_AddItemToArray(results, j);
  printf("%s (%s): %.1f C_Sign/s with %llu threads (%llu in %.2f s, mean %.3f ms)\n", shown,
         hsm_key_type_id(info.type), rate, (unsigned long long)a->threads,
         (unsigned long long)ops, elapsed, mean_ms);
  rc = 0;
out:
  atomic_store(&r.stop, 1);
  for (size_t i = 0; i < started; i++) pthread_join(w[i].thread, NULL);
  free(w);
  pthread_mutex_destroy(&r.mu);
  return rc;
}

int main(int argc, char **argv) {
  args a;
  hsm *h = NULL;
  kyso_err err = {0};
  cJSON *json = NULL;
  char module[KYSO_PATH_MAX], token[128];
  tool_name = "kyso-bench-hsm";
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0) return rc;
  rc = 1;
  if (open_token(&a, (unsigned)a.threads, &h, module, sizeof(module), token, sizeof(token),
                 &err) != KYSO_OK) {
    fprintf(stderr, "%s: %s\n", tool_name, err.msg);
    goto out;
  }
  json = cJSON_CreateObject();
  cJSON_AddStringToObject(json, "tool", "kyso-bench-hsm");
  cJSON_AddStringToObject(json, "module", module);
  cJSON_AddStringToObject(json, "token", token);
  cJSON_AddNumberToObject(json, "threads", (double)a.threads);
  cJSON_AddNumberToObject(json, "sessions", (double)a.threads);
  cJSON_AddNumberToObject(json, "duration_s", a.duration);
  cJSON_AddNumberToObject(json, "warmup_s", a.warmup);
  cJSON *results = cJSON_AddArrayToObject(json, "results");
  for (size_t i = 0; i < a.nlabels; i++)
    if (measure(&a, h, a.labels[i], NULL, results) != 0) goto out;
  if (a.prefix != NULL) {
    char first[KYSO_MAX_LABEL + 1];
    if (snprintf(first, sizeof(first), "%s0", a.prefix) >= (int)sizeof(first)) {
      fprintf(stderr, "%s: --label-prefix '%s' is too long for a key label\n", tool_name,
              a.prefix);
      goto out;
    }
    if (measure(&a, h, first, a.prefix, results) != 0) goto out;
  }
  if (a.json != NULL && tool_write_json(a.json, json) != 0) goto out;
  rc = 0;
out:
  cJSON_Delete(json);
  hsm_close(h);
  return rc;
}
