/* kysod — the time-stamping authority: kyso.v1.TimeStamp/Stamp, the RFC
 * 3161 HTTP endpoint, and the signature-time-stamps of CAdES-T signing.
 * Serials and genTime come from tsa_state, so on this node they are unique
 * and never go backwards; the token is signed by the HSM key
 * kyso/tsa/<name>, which an operator provisions like any other key. */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/log.h"
#include "kysod.h"

#include "kyso/v1/timestamp.pb-c.h"

#define TSA_MAX_QUERY (64 * 1024)
/* The longest wait at start for the clock to pass a crash's genTime bound:
 * the state's lease (1 s) and some slack. */
#define TSA_START_WAIT_MAX_MS 2000

static const char *const http_paths[] = {"/", "/tsa", NULL};

/* The TSA for label, or NULL (and OK) when its key or certificate is not
 * there yet. Anything else wrong with it is an error. */
static kyso_status open_tsa(kysod *d, signer_tsa **out, kyso_err *err) {
  X509 *cert = NULL;
  *out = NULL;
  kyso_status st = signer_certificate(d->signer, d->tsa_label, &cert, NULL, err);
  X509_free(cert);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  return signer_tsa_open(d->signer, d->tsa_label, d->cfg.tsa_policy, out, err);
}

kyso_status kysod__tsa_open(kysod *d, kyso_err *err) {
  kyso_status st;
  char path[KYSO_PATH_MAX + 16];
  snprintf(d->tsa_label, sizeof(d->tsa_label), "kyso/tsa/%s", d->cfg.tsa_name);
  if (pthread_rwlock_init(&d->tsa_lock, NULL) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot create the TSA lock");
  snprintf(path, sizeof(path), "%s/tsa/state", d->cfg.data_dir);
  tsa_state_opts so = {.path = path, .node_id = (uint16_t)d->cfg.node_id};
  if ((st = tsa_state_open(&so, &d->tsa_state, err)) != KYSO_OK) return st;
  /* After a crash the state holds only a bound above the last genTime,
   * up to one lease ahead of it: wait that out here rather than refuse the
   * first time-stamps. A clock further behind is a real problem and is
   * reported (health NOT_SERVING) rather than waited for. */
  int64_t behind = tsa_state_clock_behind_ms(d->tsa_state);
  if (behind > 0 && behind <= TSA_START_WAIT_MAX_MS) {
    kyso_log(KYSO_LOG_INFO,
             "waiting %lld ms for the clock to pass the genTime bound saved before an "
             "unclean stop",
             (long long)behind);
    struct timespec ts = {.tv_sec = (behind + 1) / 1000, .tv_nsec = (behind + 1) % 1000 * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
  } else if (behind > 0) {
    kyso_log(KYSO_LOG_WARN,
             "the clock is %lld ms behind the last genTime this node issued: the TSA issues "
             "nothing until it catches up; check the clock (chronyc tracking)",
             (long long)behind);
  }
  if ((st = open_tsa(d, &d->tsa, err)) != KYSO_OK)
    return kyso_err_wrap(err, "TSA '%s'", d->tsa_label);
  if (d->tsa == NULL)
    kyso_log(KYSO_LOG_WARN,
             "TSA key '%s' has no certificate yet: time-stamps (and CAdES-T signing) wait "
             "until an operator provisions it (kyso keygen --tsa %s, kyso csr --tsa %s, then "
             "kyso cert import --tsa %s)",
             d->tsa_label, d->cfg.tsa_name, d->cfg.tsa_name, d->cfg.tsa_name);
  else
    kyso_log(KYSO_LOG_INFO, "TSA '%s' ready: %s, policy %s, node %u", d->tsa_label,
             signer_tsa_name(d->tsa), d->cfg.tsa_policy, d->cfg.node_id);
  if (d->cfg.timestamp == KYSO_TIMESTAMP_EXTERNAL) {
    if (d->cfg.timestamp_ca[0] == '\0')
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "[signer] timestamp = external needs timestamp_ca: the trust anchors "
                       "that the external TSA's tokens must chain to");
    d->ext_tsa_store = X509_STORE_new();
    if (d->ext_tsa_store == NULL ||
        !X509_STORE_load_file(d->ext_tsa_store, d->cfg.timestamp_ca)) {
      kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot load [signer] timestamp_ca '%s'",
                d->cfg.timestamp_ca);
      return kyso_err_add_openssl(err);
    }
  }
  return KYSO_OK;
}

void kysod__tsa_close(kysod *d) {
  http_server_stop(d->tsa_http);
  d->tsa_http = NULL;
  signer_tsa_close(d->tsa);
  d->tsa = NULL;
  tsa_state_close(d->tsa_state);
  d->tsa_state = NULL;
  X509_STORE_free(d->ext_tsa_store);
  d->ext_tsa_store = NULL;
}

kyso_status kysod__tsa_check_import(kysod *d, const char *label, X509 *cert, kyso_err *err) {
  if (strncmp(label, "kyso/tsa/", 9) != 0) return KYSO_OK;
  (void)d;
  return signer_tsa_check_certificate(cert, err);
}

void kysod__tsa_reload(kysod *d, const char *label) {
  kyso_err err = {0};
  signer_tsa *fresh = NULL, *old;
  if (strcmp(label, d->tsa_label) != 0) return;
  if (open_tsa(d, &fresh, &err) != KYSO_OK || fresh == NULL) {
    kyso_log(KYSO_LOG_ERROR, "TSA '%s' could not be opened after its certificate was imported: %s",
             label, err.msg);
    return;
  }
  pthread_rwlock_wrlock(&d->tsa_lock);
  old = d->tsa;
  d->tsa = fresh;
  pthread_rwlock_unlock(&d->tsa_lock);
  signer_tsa_close(old);
  kyso_log(KYSO_LOG_INFO, "TSA '%s' ready: %s, policy %s, node %u", label, signer_tsa_name(fresh),
           d->cfg.tsa_policy, d->cfg.node_id);
}

int kysod__tsa_ready(kysod *d, char *why, size_t why_size) {
  int64_t behind = tsa_state_clock_behind_ms(d->tsa_state);
  pthread_rwlock_rdlock(&d->tsa_lock);
  int provisioned = d->tsa != NULL;
  pthread_rwlock_unlock(&d->tsa_lock);
  if (!provisioned) {
    snprintf(why, why_size, "TSA key '%s' is not provisioned", d->tsa_label);
    return 0;
  }
  if (behind > 0) {
    snprintf(why, why_size, "the clock is %lld ms behind the last issued genTime",
             (long long)behind);
    return 0;
  }
  return 1;
}

/* One token from kysod's TSA: over a query (DER TimeStampReq, answered
 * with a TimeStampResp) or over a digest (a bare token). A lost HSM is
 * re-initialised and the token tried once more, with a fresh serial. */
/* What a token made over a digest says, known without parsing it back. */
static void own_token_info(kysod *d, uint64_t serial, int64_t ms, signer_ts_info *info) {
  struct tm tm;
  time_t sec = (time_t)(ms / 1000);
  memset(info, 0, sizeof(*info));
  info->status = 0;
  info->has_token = 1;
  snprintf(info->serial, sizeof(info->serial), "%llu", (unsigned long long)serial);
  info->gen_time = sec;
  info->gen_time_ms = (unsigned)(ms % 1000);
  gmtime_r(&sec, &tm);
  char day[24];
  strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(info->gen_time_text, sizeof(info->gen_time_text), "%.20s.%03uZ", day,
           info->gen_time_ms % 1000);
  snprintf(info->policy, sizeof(info->policy), "%s", d->cfg.tsa_policy);
  snprintf(info->hash, sizeof(info->hash), "SHA256");
  snprintf(info->tsa, sizeof(info->tsa), "%s", signer_tsa_name(d->tsa));
}

/* info (sha256 only, may be NULL) is filled from what was issued. */
static kyso_status issue(kysod *d, const uint8_t *query, size_t query_len,
                         const uint8_t *sha256, uint8_t **out, size_t *out_len,
                         signer_ts_info *info, kyso_err *err) {
  kyso_status st;
  pthread_rwlock_rdlock(&d->tsa_lock);
  for (int attempt = 0;; attempt++) {
    uint64_t serial;
    int64_t ms;
    if (d->tsa == NULL) {
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "kysod's TSA key '%s' has no certificate: an operator provisions it with "
                     "`kyso keygen --tsa %s`, `kyso csr --tsa %s` and `kyso cert import --tsa %s`",
                     d->tsa_label, d->cfg.tsa_name, d->cfg.tsa_name, d->cfg.tsa_name);
      break;
    }
    if ((st = tsa_state_next(d->tsa_state, &serial, &ms, err)) != KYSO_OK) break;
    if (sha256 != NULL) {
      st = signer_tsa_stamp_digest(d->tsa, sha256, serial, (time_t)(ms / 1000),
                                   (unsigned)(ms % 1000), out, out_len, err);
      if (st == KYSO_OK && info != NULL) own_token_info(d, serial, ms, info);
    }
    else
      st = signer_tsa_respond(d->tsa, query, query_len, serial, (time_t)(ms / 1000),
                              (unsigned)(ms % 1000), out, out_len, err);
    if (st != KYSO_UNAVAILABLE || attempt > 0) break;
    /* Recovery re-initialises the HSM under its own lock; our read lock
     * only keeps d->tsa from being replaced meanwhile. */
    if (kysod__recover_hsm(d, err) != KYSO_OK) break;
  }
  pthread_rwlock_unlock(&d->tsa_lock);
  return st;
}

static kyso_status external_token(kysod *d, const uint8_t sha256[32], int64_t timeout_ms,
                                  uint8_t **token, size_t *token_len, kyso_err *err) {
  kyso_status st;
  uint8_t *query = NULL, *reply = NULL;
  size_t query_len = 0, reply_len = 0;
  uint64_t nonce = 0;
  unsigned t = d->cfg.timestamp_timeout_ms;
  if (timeout_ms > 0 && timeout_ms < (int64_t)t) t = (unsigned)timeout_ms;
  if ((st = signer_ts_query(sha256, &nonce, &query, &query_len, err)) != KYSO_OK) goto out;
  http_post_opts po = {.url = d->cfg.timestamp_url,
                       .content_type = "application/timestamp-query",
                       .accept_type = "application/timestamp-reply",
                       .ca_file = strncmp(d->cfg.timestamp_url, "https:", 6) == 0
                                      ? d->cfg.timestamp_ca
                                      : NULL,
                       .timeout_ms = t,
                       .max_reply = 256 * 1024};
  if ((st = http_post(&po, query, query_len, &reply, &reply_len, err)) != KYSO_OK) goto out;
  st = signer_ts_accept(reply, reply_len, sha256, nonce, d->ext_tsa_store, token, token_len, err);
  if (st != KYSO_OK)
    kyso_err_wrap(err, "external TSA %s gave an unusable answer", d->cfg.timestamp_url);
out:
  OPENSSL_free(query);
  free(reply);
  return st;
}

kyso_status kysod__signature_timestamp(kysod *d, const uint8_t sha256[32], int64_t timeout_ms,
                                       uint8_t **token, size_t *token_len, signer_ts_info *info,
                                       kyso_err *err) {
  kyso_status st;
  *token = NULL;
  *token_len = 0;
  switch (d->cfg.timestamp) {
    case KYSO_TIMESTAMP_OFF:
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "this node's signature time-stamps are off ([signer] timestamp = off); "
                       "ask for CADES_BES or turn them on");
    case KYSO_TIMESTAMP_EXTERNAL:
      st = external_token(d, sha256, timeout_ms, token, token_len, err);
      if (st == KYSO_OK) st = signer_ts_describe(*token, *token_len, 1, info, err);
      break;
    default:
      st = issue(d, NULL, 0, sha256, token, token_len, info, err);
      break;
  }
  if (st != KYSO_OK) {
    OPENSSL_free(*token);
    *token = NULL;
    *token_len = 0;
  }
  return st;
}

void kysod__timestamp_stamp(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  uint8_t *reply = NULL;
  size_t reply_len = 0;
  signer_ts_info info;
  Kyso__V1__StampRequest *req = kyso__v1__stamp_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.StampRequest");
    goto out;
  }
  if (req->query.len == 0 || req->query.len > TSA_MAX_QUERY) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT,
                   "query is %zu bytes; send a DER TimeStampReq of 1 to %d bytes",
                   req->query.len, TSA_MAX_QUERY);
    goto out;
  }
  if ((st = issue(d, req->query.data, req->query.len, NULL, &reply, &reply_len, NULL, &err)) !=
      KYSO_OK)
    goto out;
  if ((st = signer_ts_describe(reply, reply_len, 0, &info, &err)) != KYSO_OK) goto out;
  Kyso__V1__StampResponse resp = KYSO__V1__STAMP_RESPONSE__INIT;
  resp.reply.data = reply;
  resp.reply.len = reply_len;
  resp.status = (uint32_t)info.status;
  resp.failure_info = info.failure_info;
  resp.status_text = info.status_text;
  resp.serial = info.has_token ? info.serial : (char *)"";
  resp.gen_time = info.has_token ? info.gen_time_text : (char *)"";
  resp.tsa = info.has_token ? info.tsa : (char *)"";
  if (info.has_token)
    kyso_log(KYSO_LOG_DEBUG, "timestamp principal=%s serial=%s time=%s",
             rpc_call_peer(call)->principal, info.serial, info.gen_time_text);
  else
    kyso_log(KYSO_LOG_INFO, "timestamp rejected principal=%s failure_info=0x%x: %s",
             rpc_call_peer(call)->principal, info.failure_info, info.status_text);
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) {
    kyso_log(KYSO_LOG_WARN, "timestamp failed principal=%s: %s", rpc_call_peer(call)->principal,
             err.msg);
    rpc_call_finish(call, st, err.msg, NULL, 0);
  }
  OPENSSL_free(reply);
  kyso__v1__stamp_request__free_unpacked(req, NULL);
}

/* HTTP: a granted token or a client-fault rejection is 200; a TSA that
 * cannot issue answers 503 with a TimeStampResp saying why (RFC 3161
 * timeNotAvailable while the clock is behind), so RFC 3161 clients and
 * HTTP clients both understand it. */
static void http_answer(void *arg, const char *path, const uint8_t *req, size_t req_len,
                        int *code, uint8_t **body, size_t *body_len, unsigned *retry_after_s) {
  kysod *d = arg;
  kyso_err err = {0};
  uint8_t *der = NULL;
  size_t der_len = 0;
  (void)path;
  *body = NULL;
  *body_len = 0;
  kyso_status st = issue(d, req, req_len, NULL, &der, &der_len, NULL, &err);
  int bit = SIGNER_TSA_FAIL_SYSTEM_FAILURE;
  if (st == KYSO_OK) {
    *code = 200;
  } else {
    int64_t behind = tsa_state_clock_behind_ms(d->tsa_state);
    if (st == KYSO_UNAVAILABLE && behind > 0) {
      bit = SIGNER_TSA_FAIL_TIME_NOT_AVAILABLE;
      *retry_after_s = (unsigned)(behind / 1000 + 1);
    }
    *code = st == KYSO_UNAVAILABLE || st == KYSO_FAILED_PRECONDITION ? 503 : 500;
    kyso_log(KYSO_LOG_WARN, "timestamp over HTTP failed: %s", err.msg);
    kyso_err rerr = {0};
    if (signer_tsa_refusal(bit, err.msg, &der, &der_len, &rerr) != KYSO_OK) return;
  }
  /* The server frees with free(); OpenSSL's allocator may differ. */
  if ((*body = malloc(der_len ? der_len : 1)) != NULL) {
    memcpy(*body, der, der_len);
    *body_len = der_len;
  } else {
    *code = 500;
  }
  OPENSSL_free(der);
}

kyso_status kysod__tsa_http_start(kysod *d, kyso_err *err) {
  if (d->cfg.tsa_http_listen[0] == '\0') return KYSO_OK;
  http_server_opts ho = {.listen = d->cfg.tsa_http_listen,
                         .tls_cert = d->cfg.tsa_http_cert,
                         .tls_key = d->cfg.tsa_http_key,
                         .paths = http_paths,
                         .content_type = "application/timestamp-query",
                         .reply_type = "application/timestamp-reply",
                         .max_body = d->cfg.tsa_http_max_request,
                         .threads = d->cfg.tsa_http_threads,
                         .handler = http_answer,
                         .arg = d};
  kyso_status st = http_server_start(&ho, &d->tsa_http, err);
  if (st != KYSO_OK) return kyso_err_wrap(err, "[tsa] http_listen '%s'", d->cfg.tsa_http_listen);
  return KYSO_OK;
}
