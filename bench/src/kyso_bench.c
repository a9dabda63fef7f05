/* kyso-bench — a load generator for a kysod node over real gRPC/mTLS: flags
 * and configuration, the run, and its JSON and one-line summary. The calls
 * are in load_calls.c, the closed and open loops in load_run.c. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "histogram.h"
#include "kyso/client.h"
#include "kyso/config.h"
#include "kyso/limits.h"
#include "kyso/v1/signer.pb-c.h"
#include "load.h"

#define MAX_CONCURRENCY 4096 /* one thread each */
#define WORKERS_PER_CLIENT 4 /* so that no one channel is the bottleneck */
#define CDF_POINTS 110

static const char usage_text[] =
    "Usage: kyso-bench --scenario sign|stamp|put|get|health [OPTIONS]\n"
    "\n"
    "Loads a kysod node over gRPC/mTLS for --warmup seconds (not recorded), then\n"
    "--duration seconds (recorded), and reports calls/s and the latency of the\n"
    "successful calls (JSON with --json, one line on stdout). One call is made\n"
    "first, not recorded: if it fails, kyso-bench stops there and says why.\n"
    "\n"
    "Connection (flags override the [cli] section of --config, as for kyso):\n"
    "  -c, --config FILE        configuration file with a [cli] section\n"
    "                           (default: $KYSO_CONFIG)\n"
    "  -a, --address HOST:PORT  node (default 127.0.0.1:7443)\n"
    "      --ca FILE            trust anchors for the node's certificate (PEM)\n"
    "      --cert FILE          client certificate (PEM)\n"
    "      --key FILE           its private key (PEM)\n"
    "      --server-name NAME   TLS name to expect from the node\n"
    "      --clients N          gRPC channels (default: one per 4 workers)\n"
    "      --timeout S          deadline of each call (default 30)\n"
    "\n"
    "Load:\n"
    "  -s, --scenario NAME      sign    Signer.Sign of distinct documents\n"
    "                           stamp   TimeStamp.Stamp of distinct SHA-256 digests\n"
    "                           put     Archive.Put of distinct documents\n"
    "                           get     Archive.Get of --get-docs documents put first\n"
    "                           health  grpc.health.v1 Health/Check (the empty call)\n"
    "      --concurrency N      closed loop: N calls in flight, each worker calling\n"
    "                           again when its call returns (default 8); with\n"
    "                           --rate, at most N in flight (default 256)\n"
    "      --rate R             open loop: R calls/s at fixed intervals; latency\n"
    "                           counts from when each call was due, so calls that\n"
    "                           start late (all workers busy) count their wait\n"
    "      --duration S         measured seconds (default 10)\n"
    "      --warmup S           seconds run first and discarded (default 2)\n"
    "\n"
    "Sign (personal keys of accounts PREFIX0 .. PREFIX<N-1>, round robin):\n"
    "      --account NAME       sign with this one account's key\n"
    "      --account-prefix P   accounts P0, P1 ... (default \"bench.\")\n"
    "      --keys N             how many of them (default 1)\n"
    "      --key-alg rsa|ec     without --account-prefix: prefix bench.rsa. or\n"
    "                           bench.ec.\n"
    "      --seal UNIT          apply unit UNIT's seal instead of a personal key\n"
    "      --format bes|t       CAdES-BES or CAdES-T (default: the node's)\n"
    "      --skip-archive       do not archive the documents and signatures\n"
    "Sign, put, get:\n"
    "      --size BYTES         document size (default 4096; K and M suffixes:\n"
    "                           KiB, MiB); sign at most 4 MiB less 64 KiB\n"
    "      --get-docs M         get: documents put first, read round robin\n"
    "                           (default 64)\n"
    "\n"
    "Output:\n"
    "      --json FILE          write the results as JSON\n"
    "      --label TEXT         a name for this run in the JSON (default: scenario)\n"
    "  -q, --quiet              no progress lines on stderr\n"
    "  -h, --help               this help\n"
    "\n"
    "Exit status: 0 when the run completed, even with some failed calls (counted\n"
    "by gRPC status in the JSON); 1 when every call failed (the first error is\n"
    "printed) or a setup step did; 2 on a usage error.\n";

enum {
  O_CA = 1, O_CERT, O_KEY, O_SERVER_NAME, O_CLIENTS, O_TIMEOUT, O_CONCURRENCY, O_RATE,
  O_DURATION, O_WARMUP, O_ACCOUNT, O_PREFIX, O_KEYS, O_KEY_ALG, O_SEAL, O_FORMAT,
  O_SKIP_ARCHIVE, O_SIZE, O_GET_DOCS, O_JSON, O_LABEL
};

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},
    {"address", required_argument, NULL, 'a'},
    {"ca", required_argument, NULL, O_CA},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"server-name", required_argument, NULL, O_SERVER_NAME},
    {"clients", required_argument, NULL, O_CLIENTS},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"scenario", required_argument, NULL, 's'},
    {"concurrency", required_argument, NULL, O_CONCURRENCY},
    {"rate", required_argument, NULL, O_RATE},
    {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"account", required_argument, NULL, O_ACCOUNT},
    {"account-prefix", required_argument, NULL, O_PREFIX},
    {"keys", required_argument, NULL, O_KEYS},
    {"key-alg", required_argument, NULL, O_KEY_ALG},
    {"seal", required_argument, NULL, O_SEAL},
    {"format", required_argument, NULL, O_FORMAT},
    {"skip-archive", no_argument, NULL, O_SKIP_ARCHIVE},
    {"size", required_argument, NULL, O_SIZE},
    {"get-docs", required_argument, NULL, O_GET_DOCS},
    {"json", required_argument, NULL, O_JSON},
    {"label", required_argument, NULL, O_LABEL},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

static const char *const scenario_names[] = {"sign", "stamp", "put", "get", "health"};

/* What the command line says, before it becomes load_opts. */
typedef struct args {
  const char *config, *address, *ca, *cert, *key, *server_name;
  const char *scenario, *account, *prefix, *key_alg, *seal, *format, *json, *label;
  double rate, duration, warmup, timeout;
  unsigned long concurrency, clients, keys, size, get_docs;
  int skip_archive, quiet;
  int set_keys, set_size, set_get_docs; /* given, not defaults */
} args;

static int usage_error(const char *fmt, ...) KYSO_PRINTF(1, 2);
static int usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("kyso-bench: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("; see kyso-bench --help\n", stderr);
  return 2;
}

/* A number >= 0 (> 0 with positive), e.g. seconds or calls/s. */
static int parse_number(const char *v, const char *flag, int positive, double *out) {
  char *end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !isfinite(d) || d < 0 || (positive && d == 0) ||
      d > 1e7)
    return usage_error("%s needs a number%s, not '%s'", flag, positive ? " above 0" : ", 0 or more",
                       v);
  *out = d;
  return 0;
}

/* A whole number in [lo, hi], with a K or M suffix (x 1024) when allowed. */
static int parse_count(const char *v, const char *flag, unsigned long lo, unsigned long hi,
                       int suffix, unsigned long *out) {
  char *end = NULL;
  unsigned long long mult = 1;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (suffix && end != v && (*end == 'K' || *end == 'k')) {
    mult = 1024;
    end++;
  } else if (suffix && end != v && (*end == 'M' || *end == 'm')) {
    mult = 1024 * 1024;
    end++;
  }
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n > hi / mult || n * mult < lo) {
    fprintf(stderr, "kyso-bench: %s needs a whole number from %lu to %lu, not '%s'\n", flag, lo,
            hi, v);
    return 2;
  }
  *out = (unsigned long)(n * mult);
  return 0;
}

/* -1 to go on, or the exit status (0 after --help). */
static int parse_args(int argc, char **argv, args *a) {
  int opt;
  memset(a, 0, sizeof(*a));
  a->config = getenv("KYSO_CONFIG");
  a->duration = 10;
  a->warmup = 2;
  a->timeout = 30;
  a->keys = 1;
  a->size = 4096;
  a->get_docs = 64;
  while ((opt = getopt_long(argc, argv, "c:a:s:qh", longopts, NULL)) != -1) {
    int rc = 0;
    switch (opt) {
      case 'c': a->config = optarg; break;
      case 'a': a->address = optarg; break;
      case O_CA: a->ca = optarg; break;
      case O_CERT: a->cert = optarg; break;
      case O_KEY: a->key = optarg; break;
      case O_SERVER_NAME: a->server_name = optarg; break;
      case O_CLIENTS:
        rc = parse_count(optarg, "--clients", 1, MAX_CONCURRENCY, 0, &a->clients);
        break;
      case O_TIMEOUT: rc = parse_number(optarg, "--timeout (seconds)", 1, &a->timeout); break;
      case 's': a->scenario = optarg; break;
      case O_CONCURRENCY:
        rc = parse_count(optarg, "--concurrency", 1, MAX_CONCURRENCY, 0, &a->concurrency);
        break;
      case O_RATE: rc = parse_number(optarg, "--rate (calls/s)", 0, &a->rate); break;
      case O_DURATION: rc = parse_number(optarg, "--duration (seconds)", 1, &a->duration); break;
      case O_WARMUP: rc = parse_number(optarg, "--warmup (seconds)", 0, &a->warmup); break;
      case O_ACCOUNT: a->account = optarg; break;
      case O_PREFIX: a->prefix = optarg; break;
      case O_KEYS:
        rc = parse_count(optarg, "--keys", 1, 10000000, 0, &a->keys);
        a->set_keys = 1;
        break;
      case O_KEY_ALG: a->key_alg = optarg; break;
      case O_SEAL: a->seal = optarg; break;
      case O_FORMAT: a->format = optarg; break;
      case O_SKIP_ARCHIVE: a->skip_archive = 1; break;
      case O_SIZE:
        rc = parse_count(optarg, "--size", 16, (unsigned long)1 << 32, 1, &a->size);
        a->set_size = 1;
        break;
      case O_GET_DOCS:
        rc = parse_count(optarg, "--get-docs", 1, 1000000, 0, &a->get_docs);
        a->set_get_docs = 1;
        break;
      case O_JSON: a->json = optarg; break;
      case O_LABEL: a->label = optarg; break;
      case 'q': a->quiet = 1; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: fputs(usage_text, stderr); return 2;
    }
    if (rc) return rc;
  }
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
  return -1;
}

/* The sign options into o; 2 on a clash. */
static int sign_opts(const args *a, load_opts *o) {
  int alg_prefix = 0;
  if (a->format == NULL) {
    o->format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_UNSPECIFIED;
  } else if (strcmp(a->format, "bes") == 0) {
    o->format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES;
  } else if (strcmp(a->format, "t") == 0) {
    o->format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_T;
  } else {
    return usage_error("--format is bes (CAdES-BES) or t (CAdES-T), not '%s'", a->format);
  }
  if (a->key_alg != NULL) {
    if (strcmp(a->key_alg, "rsa") != 0 && strcmp(a->key_alg, "ec") != 0)
      return usage_error("--key-alg is rsa or ec, not '%s'", a->key_alg);
    alg_prefix = 1;
  }
  if ((a->account != NULL) + (a->seal != NULL) + (a->prefix != NULL || alg_prefix) > 1)
    return usage_error("give one of --account NAME, --seal UNIT, or --account-prefix P "
                       "/ --key-alg with --keys N");
  if ((a->account != NULL || a->seal != NULL) && a->set_keys && a->keys != 1)
    return usage_error("--account and --seal name one key: drop --keys, or use "
                       "--account-prefix P --keys N");
  o->account = a->account;
  o->seal_unit = a->seal;
  o->keys = (unsigned)a->keys;
  o->account_prefix = a->prefix != NULL  ? a->prefix
                      : a->key_alg == NULL ? "bench."
                      : strcmp(a->key_alg, "rsa") == 0 ? "bench.rsa."
                                                        : "bench.ec.";
  o->skip_archive = a->skip_archive;
  if (a->size > KYSO_MAX_INLINE_DOCUMENT) {
    fprintf(stderr, "kyso-bench: sign sends documents inline, at most %d bytes; --size %lu is "
            "more (time larger ones with --scenario put)\n", KYSO_MAX_INLINE_DOCUMENT, a->size);
    return 2;
  }
  return 0;
}

/* The command line into o; 2 on a usage error. */
static int make_opts(const args *a, load_opts *o) {
  memset(o, 0, sizeof(*o));
  if (a->scenario == NULL) return usage_error("give --scenario sign|stamp|put|get|health");
  size_t ns = sizeof(scenario_names) / sizeof(scenario_names[0]), i;
  for (i = 0; i < ns && strcmp(a->scenario, scenario_names[i]) != 0; i++) {
  }
  if (i == ns) return usage_error("unknown --scenario '%s' (sign, stamp, put, get, health)",
                                  a->scenario);
  o->scenario = (load_scenario)i;
  int is_sign = o->scenario == LOAD_SIGN;
  if (!is_sign && (a->account || a->prefix || a->set_keys || a->key_alg || a->seal || a->format ||
                   a->skip_archive))
    return usage_error("--account, --account-prefix, --keys, --key-alg, --seal, "
                       "--format and --skip-archive are for --scenario sign");
  if (a->set_size && (o->scenario == LOAD_STAMP || o->scenario == LOAD_HEALTH))
    return usage_error("--size is for sign, put and get, not %s", a->scenario);
  if (a->set_get_docs && o->scenario != LOAD_GET)
    return usage_error("--get-docs is for --scenario get");
  if (is_sign && sign_opts(a, o) != 0) return 2;
  o->concurrency = (unsigned)(a->concurrency ? a->concurrency : a->rate > 0 ? 256 : 8);
  o->rate = a->rate;
  o->duration_s = a->duration;
  o->warmup_s = a->warmup;
  o->timeout_ms = (int64_t)(a->timeout * 1000);
  o->size = a->size;
  o->get_docs = (unsigned)a->get_docs;
  o->quiet = a->quiet;
  return 0;
}

/* Connection settings: [cli] of the config, flags over them, like kyso. */
static int open_clients(const args *a, kyso_config *cfg, size_t n, kyso_client **clients,
                        const char **address) {
  kyso_err err = {0};
  if (a->config != NULL && kyso_config_load(a->config, cfg, &err) != KYSO_OK) {
    fprintf(stderr, "kyso-bench: %s\n", err.msg);
    return 1;
  }
  kyso_client_opts co = {
      .target = a->address ? a->address : cfg->cli_address[0] ? cfg->cli_address : "127.0.0.1:7443",
      .ca_file = a->ca ? a->ca : cfg->cli_ca[0] ? cfg->cli_ca : NULL,
      .cert_file = a->cert ? a->cert : cfg->cli_cert[0] ? cfg->cli_cert : NULL,
      .key_file = a->key ? a->key : cfg->cli_key[0] ? cfg->cli_key : NULL,
      .server_name = a->server_name ? a->server_name
                     : cfg->cli_server_name[0] ? cfg->cli_server_name : NULL,
      .max_message = KYSO_MAX_MESSAGE};
  *address = co.target;
  if (co.ca_file == NULL) {
    fprintf(stderr, "kyso-bench: no trust anchor for the node's certificate: give --ca FILE, "
            "or --config FILE with ca in its [cli] section\n");
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    if (kyso_client_open(&co, &clients[i], &err) != KYSO_OK) {
      fprintf(stderr, "kyso-bench: %s\n", err.msg);
      return 1;
    }
  }
  return 0;
}

static double ms(uint64_t ns) { return round((double)ns / 1e3) / 1e3; }

/* A parameter that applies to the scenario, or null. */
static void add_string(cJSON *p, const char *name, int applies, const char *v) {
  cJSON_AddItemToObject(p, name, applies && v ? cJSON_CreateString(v) : cJSON_CreateNull());
}
static void add_number(cJSON *p, const char *name, int applies, double v) {
  cJSON_AddItemToObject(p, name, applies ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

static cJSON *params_json(const load_opts *o, size_t nclients) {
  /* By SignatureFormat: UNSPECIFIED, CADES_BES, CADES_T. */
  static const char *const formats[] = {"default", "bes", "t"};
  int sign = o->scenario == LOAD_SIGN, get = o->scenario == LOAD_GET;
  int sized = sign || get || o->scenario == LOAD_PUT;
  int by_prefix = sign && o->account == NULL && o->seal_unit == NULL;
  cJSON *p = cJSON_CreateObject();
  add_string(p, "format", sign, formats[o->format]);
  add_number(p, "keys", sign, o->keys);
  add_string(p, "account_prefix", by_prefix, o->account_prefix);
  add_string(p, "account", sign, o->account);
  add_string(p, "seal_unit", sign, o->seal_unit);
  add_number(p, "size", sized, (double)o->size);
  add_number(p, "concurrency", 1, o->concurrency);
  add_number(p, "clients", 1, (double)nclients);
  add_number(p, "rate", 1, o->rate);
  add_number(p, "duration_s", 1, o->duration_s);
  add_number(p, "warmup_s", 1, o->warmup_s);
  add_number(p, "timeout_s", 1, (double)o->timeout_ms / 1000.0);
  cJSON_AddItemToObject(p, "skip_archive",
                        sign ? cJSON_CreateBool(o->skip_archive) : cJSON_CreateNull());
  add_number(p, "get_docs", get, o->get_docs);
  return p;
}

/* The run as the JSON document of bench/CONTRACT.md; NULL when out of
 * memory for its root (cJSON drops a member it cannot allocate). */
static cJSON *result_json(const load_opts *o, const char *label, size_t nclients,
                          const load_result *r) {
  static const double pcts[] = {50, 90, 99, 99.9};
  static const char *const pct_names[] = {"p50", "p90", "p99", "p999"};
  hist_point pts[CDF_POINTS];
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "tool", "kyso-bench");
  cJSON_AddStringToObject(j, "label", label);
  cJSON_AddStringToObject(j, "scenario", scenario_names[o->scenario]);
  cJSON_AddItemToObject(j, "params", params_json(o, nclients));
  cJSON_AddNumberToObject(j, "ops", (double)r->ops);
  cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed_s);
  cJSON_AddNumberToObject(j, "throughput", (double)r->ops / r->elapsed_s);
  cJSON_AddNumberToObject(j, "bytes_per_s", (double)r->bytes / r->elapsed_s);
  cJSON *errors = cJSON_AddObjectToObject(j, "errors");
  for (int k = 1; k < LOAD_ERR_KINDS; k++)
    if (r->errors[k]) cJSON_AddNumberToObject(errors, load_err_name(k), (double)r->errors[k]);
  cJSON_AddNumberToObject(j, "error_count", (double)r->error_count);
  cJSON_AddItemToObject(j, "first_error", r->first_error[0] ? cJSON_CreateString(r->first_error)
                                                            : cJSON_CreateNull());
  cJSON_AddStringToObject(j, "latency_of", "successes");
  cJSON *lat = cJSON_AddObjectToObject(j, "latency_ms");
  cJSON_AddNumberToObject(lat, "mean", round(hist_mean_ns(r->latency) / 1e3) / 1e3);
  for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
    cJSON_AddNumberToObject(lat, pct_names[i], ms(hist_percentile_ns(r->latency, pcts[i])));
  cJSON_AddNumberToObject(lat, "max", ms(hist_max_ns(r->latency)));
  cJSON_AddNumberToObject(lat, "min", ms(hist_min_ns(r->latency)));
  cJSON *cdf = cJSON_AddArrayToObject(j, "cdf");
  size_t n = hist_cdf(r->latency, pts, CDF_POINTS);
  for (size_t i = 0; i < n; i++) {
    double pair[2] = {ms(pts[i].value_ns), pts[i].fraction};
    cJSON_AddItemToArray(cdf, cJSON_CreateDoubleArray(pair, 2));
  }
  if (o->rate > 0) {
    cJSON *ol = cJSON_AddObjectToObject(j, "open_loop");
    cJSON_AddNumberToObject(ol, "rate", o->rate);
    cJSON_AddNumberToObject(ol, "rate_achieved",
                            (double)(r->ops + r->error_count) / r->elapsed_s);
    cJSON_AddNumberToObject(ol, "due", (double)r->due);
    cJSON_AddNumberToObject(ol, "late_starts", (double)r->late_starts);
    cJSON_AddNumberToObject(ol, "max_start_lag_ms", round(r->max_start_lag_ms * 1e3) / 1e3);
    cJSON_AddNumberToObject(ol, "not_started", (double)r->not_started);
  } else {
    cJSON_AddNullToObject(j, "open_loop");
  }
  return j;
}

static int write_json(const char *path, const cJSON *j) {
  char *text = cJSON_Print(j);
  FILE *f = text != NULL ? fopen(path, "w") : NULL;
  int rc = 1;
  if (f == NULL) {
    fprintf(stderr, "kyso-bench: cannot write the JSON to '%s': %s\n", path,
            text == NULL ? "out of memory" : strerror(errno));
    goto out;
  }
  size_t len = strlen(text);
  if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF) {
    fclose(f);
    fprintf(stderr, "kyso-bench: cannot write the JSON to '%s': %s\n", path, strerror(errno));
    goto out;
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "kyso-bench: cannot write the JSON to '%s': %s\n", path, strerror(errno));
    goto out;
  }
  rc = 0;
out:
  free(text);
  return rc;
}

/* The one line on stdout. */
static void print_summary(const load_opts *o, const char *label, const load_result *r) {
  printf("%s: %.1f calls/s (%llu in %.2f s", label, (double)r->ops / r->elapsed_s,
         (unsigned long long)r->ops, r->elapsed_s);
  if (r->bytes) printf(", %.1f MB/s", (double)r->bytes / r->elapsed_s / 1e6);
  printf("), latency ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f",
         ms(hist_percentile_ns(r->latency, 50)), ms(hist_percentile_ns(r->latency, 90)),
         ms(hist_percentile_ns(r->latency, 99)), ms(hist_percentile_ns(r->latency, 99.9)),
         ms(hist_max_ns(r->latency)));
  if (o->rate > 0)
    printf("; open loop %.1f/s asked, %.1f/s achieved, %llu late starts (max %.1f ms)", o->rate,
           (double)(r->ops + r->error_count) / r->elapsed_s, (unsigned long long)r->late_starts,
           r->max_start_lag_ms);
  printf("; %llu errors", (unsigned long long)r->error_count);
  const char *sep = " (";
  for (int k = 1; k < LOAD_ERR_KINDS; k++) {
    if (r->errors[k] == 0) continue;
    printf("%s%s %llu", sep, load_err_name(k), (unsigned long long)r->errors[k]);
    sep = ", ";
  }
  printf("%s\n", sep[0] == ',' ? ")" : "");
}

static void print_error(const char *what, const char *message, const load_opts *o, int kind,
                        const char *address) {
  const char *hint = load_hint(o, kind);
  int about_node = kind == 14 || kind == 16 || kind == LOAD_ERR_CLIENT;
  fprintf(stderr, "kyso-bench: %s: %s\n", what, message);
  if (hint[0]) fprintf(stderr, "kyso-bench: %s%s%s%s\n", hint, about_node ? " (node: " : "",
                       about_node ? address : "", about_node ? ")" : "");
}

/* 0 if path can be written: checked before a run rather than after it, by
 * creating the file (removed again if it was not there). */
static int check_writable(const char *path) {
  int existed = access(path, F_OK) == 0;
  FILE *f = fopen(path, "a");
  if (f == NULL) {
    fprintf(stderr, "kyso-bench: cannot write the JSON to '%s': %s\n", path, strerror(errno));
    return 1;
  }
  fclose(f);
  if (!existed) remove(path);
  return 0;
}

int main(int argc, char **argv) {
  args a;
  load_opts o;
  load_result r;
  kyso_config cfg;
  kyso_err err = {0};
  kyso_client **clients = NULL;
  load_ctx *x = NULL;
  load_slot *slot = NULL;
  cJSON *json = NULL;
  const char *address = "";
  size_t nclients = 0;
  memset(&r, 0, sizeof(r));
  memset(&cfg, 0, sizeof(cfg));
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0) goto out;
  if ((rc = make_opts(&a, &o)) != 0) goto out;
  rc = 1;
  if (a.json != NULL && check_writable(a.json) != 0) goto out;
  nclients = a.clients ? a.clients : (o.concurrency + WORKERS_PER_CLIENT - 1) / WORKERS_PER_CLIENT;
  if (nclients > o.concurrency) nclients = o.concurrency;
  if ((clients = calloc(nclients, sizeof(*clients))) == NULL || (slot = load_slot_new()) == NULL) {
    fprintf(stderr, "kyso-bench: out of memory\n");
    goto out;
  }
  if (open_clients(&a, &cfg, nclients, clients, &address) != 0) goto out;
  if (load_ctx_open(&o, clients[0], &x, &err) != KYSO_OK) {
    fprintf(stderr, "kyso-bench: %s\n", err.msg);
    goto out;
  }
  /* One call first, not recorded: a node that is not there, a key that is
   * not provisioned, a missing role stop the run here, with the reason. */
  load_outcome first;
  load_call(x, slot, clients[0], 0, &first);
  if (first.kind != LOAD_OK) {
    print_error("the first call failed", first.message, &o, first.kind, address);
    goto out;
  }
  if (load_run(&o, x, clients, nclients, &r, &err) != KYSO_OK) {
    fprintf(stderr, "kyso-bench: %s\n", err.msg);
    goto out;
  }
  const char *label = a.label ? a.label : scenario_names[o.scenario];
  if (a.json != NULL) {
    if ((json = result_json(&o, label, nclients, &r)) == NULL) {
      fprintf(stderr, "kyso-bench: out of memory for the JSON\n");
      goto out;
    }
    if (write_json(a.json, json) != 0) goto out;
  }
  print_summary(&o, label, &r);
  if (r.not_started > 0)
    fprintf(stderr, "kyso-bench: %llu of %llu calls due were never started: the run fell a "
            "whole --duration behind --rate %.0f/s, more than the node (or %u calls in "
            "flight) can take; lower --rate\n",
            (unsigned long long)r.not_started, (unsigned long long)r.due, o.rate,
            o.concurrency);
  if (r.ops == 0 && r.error_count == 0) {
    fprintf(stderr, "kyso-bench: no call of the measured window was made\n");
    goto out;
  }
  if (r.ops == 0) {
    print_error("every call in the measured window failed; the first error", r.first_error, &o,
                r.first_error_kind, address);
    goto out;
  }
  if (r.error_count > 0)
    print_error("some calls failed; the first", r.first_error, &o, r.first_error_kind, address);
  rc = 0;
out:
  cJSON_Delete(json);
  hist_free(r.latency);
  load_slot_free(slot);
  load_ctx_close(x);
  for (size_t i = 0; clients != NULL && i < nclients; i++) kyso_client_close(clients[i]);
  free(clients);
  kyso_config_free(&cfg);
  return rc;
}
