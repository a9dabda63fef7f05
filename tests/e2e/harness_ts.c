/* kyso end-to-end harness: time-stamps — queries, replies and tokens read
 * with OpenSSL itself, `openssl ts -verify`, health checks and HTTP by curl. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/cms.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ts.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"

int e2e_stamp_with(kyso_client *c, const uint8_t *query, size_t len, int64_t timeout_ms,
                   Kyso__V1__StampResponse **resp, char *msg, size_t msg_size) {
  Kyso__V1__StampRequest req = KYSO__V1__STAMP_REQUEST__INIT;
  req.query.data = (uint8_t *)query;
  req.query.len = len;
  return e2e_call_with(c, "/kyso.v1.TimeStamp/Stamp", &req.base,
                       &kyso__v1__stamp_response__descriptor, timeout_ms,
                       (ProtobufCMessage **)resp, msg, msg_size);
}

uint8_t *e2e_ts_query(const uint8_t *data, size_t len, int cert_req, size_t *query_len) {
  uint8_t md[32], nonce_bytes[8];
  TS_REQ *req = TS_REQ_new();
  TS_MSG_IMPRINT *imprint = TS_MSG_IMPRINT_new();
  X509_ALGOR *alg = X509_ALGOR_new();
  ASN1_INTEGER *nonce = ASN1_INTEGER_new();
  unsigned char *der = NULL;
  uint8_t *out = NULL;
  uint64_t n = 0;
  SHA256(data, len, md);
  if (RAND_bytes(nonce_bytes, sizeof(nonce_bytes)) != 1) goto done;
  for (int i = 0; i < 8; i++) n = n << 8 | nonce_bytes[i];
  if (req == NULL || imprint == NULL || alg == NULL || nonce == NULL ||
      !TS_REQ_set_version(req, 1) ||
      !X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL) ||
      !TS_MSG_IMPRINT_set_algo(imprint, alg) ||
      !TS_MSG_IMPRINT_set_msg(imprint, md, sizeof(md)) ||
      !TS_REQ_set_msg_imprint(req, imprint) || !ASN1_INTEGER_set_uint64(nonce, n | 1) ||
      !TS_REQ_set_nonce(req, nonce) || !TS_REQ_set_cert_req(req, cert_req))
    goto done;
  int der_len = i2d_TS_REQ(req, &der);
  if (der_len <= 0 || (out = malloc((size_t)der_len)) == NULL) goto done;
  memcpy(out, der, (size_t)der_len);
  *query_len = (size_t)der_len;
done:
  OPENSSL_free(der);
  ASN1_INTEGER_free(nonce);
  X509_ALGOR_free(alg);
  TS_MSG_IMPRINT_free(imprint);
  TS_REQ_free(req);
  return out;
}

/* "YYYYMMDDHHMMSS[.fff]Z" -> ms since the epoch; -1 if it is not that. */
static int64_t gentime_ms(const ASN1_GENERALIZEDTIME *t) {
  const char *s = (const char *)ASN1_STRING_get0_data(t);
  int len = ASN1_STRING_length(t);
  struct tm tm;
  int ms = 0;
  memset(&tm, 0, sizeof(tm));
  if (len < 15 || sscanf(s, "%4d%2d%2d%2d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  if (s[14] == '.') {
    int scale = 100;
    for (int i = 15; i < len && s[i] >= '0' && s[i] <= '9'; i++, scale /= 10)
      ms += (s[i] - '0') * scale;
  }
  return (int64_t)timegm(&tm) * 1000 + ms;
}

static void read_tst(TS_TST_INFO *tst, e2e_ts *out) {
  out->has_token = 1;
  if (!ASN1_INTEGER_get_uint64(&out->serial, TS_TST_INFO_get_serial(tst))) out->serial = 0;
  out->gen_ms = gentime_ms(TS_TST_INFO_get_time(tst));
  OBJ_obj2txt(out->policy, sizeof(out->policy), TS_TST_INFO_get_policy_id(tst), 1);
}

int e2e_ts_parse(const uint8_t *der, size_t len, int is_token, e2e_ts *out) {
  const unsigned char *p = der;
  memset(out, 0, sizeof(*out));
  out->status = -1;
  if (is_token) {
    PKCS7 *tok = d2i_PKCS7(NULL, &p, (long)len);
    TS_TST_INFO *tst = tok ? PKCS7_to_TS_TST_INFO(tok) : NULL;
    if (tst != NULL) {
      out->status = 0;
      read_tst(tst, out);
    }
    TS_TST_INFO_free(tst);
    PKCS7_free(tok);
    return out->status == 0 ? 0 : -1;
  }
  TS_RESP *r = d2i_TS_RESP(NULL, &p, (long)len);
  if (r == NULL) return -1;
  TS_STATUS_INFO *si = TS_RESP_get_status_info(r);
  out->status = (int)ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(si);
  for (int bit = 0; fi != NULL && bit < 32; bit++)
    if (ASN1_BIT_STRING_get_bit(fi, bit)) out->failure_bits |= 1u << bit;
  TS_TST_INFO *tst = TS_RESP_get_tst_info(r);
  if (tst != NULL) read_tst(tst, out);
  TS_RESP_free(r);
  return 0;
}

int e2e_openssl_ts_verify(e2e *e, const char *pki_dir, const char *reply, const char *data,
                          int token_in) {
  const char *pki = pki_dir ? pki_dir : e->pki;
  char root[400], chain[400];
  snprintf(root, sizeof(root), "%s/root.pem", pki);
  snprintf(chain, sizeof(chain), "%s/chain.pem", pki);
  const char *with_token[] = {"openssl", "ts", "-verify", "-token_in", "-in", reply, "-data",
                              data, "-CAfile", root, "-untrusted", chain, NULL};
  const char *with_reply[] = {"openssl", "ts", "-verify", "-in", reply, "-data", data,
                              "-CAfile", root, "-untrusted", chain, NULL};
  return e2e_run(token_in ? with_token : with_reply, e2e_path(e, "work/ts-verify.log"));
}

int e2e_cms_timestamp(const uint8_t *cms, size_t len, const char *token_path,
                      const char *sigvalue_path) {
  const unsigned char *p = cms;
  int rc = -1;
  CMS_ContentInfo *ci = d2i_CMS_ContentInfo(NULL, &p, (long)len);
  CMS_SignerInfo *si = ci ? sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0) : NULL;
  if (si == NULL) goto done;
  ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
  if (e2e_write_file(sigvalue_path, ASN1_STRING_get0_data(sig), (size_t)ASN1_STRING_length(sig)))
    goto done;
  int at = CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, -1);
  if (at < 0) {
    rc = 0;
    goto done;
  }
  ASN1_TYPE *v = X509_ATTRIBUTE_get0_type(CMS_unsigned_get_attr(si, at), 0);
  if (v == NULL || v->type != V_ASN1_SEQUENCE) goto done;
  if (e2e_write_file(token_path, v->value.sequence->data, (size_t)v->value.sequence->length))
    goto done;
  rc = 1;
done:
  CMS_ContentInfo_free(ci);
  return rc;
}

int e2e_health(e2e *e, const char *service) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  req.service = (char *)service;
  int st = e2e_call(e, E2E_ARCH, "/grpc.health.v1.Health/Check", &req.base,
                    &grpc__health__v1__health_check_response__descriptor, 10000,
                    (ProtobufCMessage **)&resp, NULL, 0);
  if (st != 0) return -st;
  int status = resp->status;
  grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  return status;
}

int e2e_free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  socklen_t n = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &n) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

int e2e_http(int port, const char *path, const char *method, const char *content_type,
             const char *body_file, const char *out_file) {
  char url[128], hdr_file[512], type_hdr[256], data_arg[512], code_file[512];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  snprintf(hdr_file, sizeof(hdr_file), "%s.hdr", out_file);
  snprintf(code_file, sizeof(code_file), "%s.code", out_file);
  snprintf(type_hdr, sizeof(type_hdr), "Content-Type: %s", content_type ? content_type : "");
  snprintf(data_arg, sizeof(data_arg), "@%s", body_file ? body_file : "/dev/null");
  const char *argv[24];
  int n = 0;
  argv[n++] = "curl";
  argv[n++] = "-sS";
  argv[n++] = "--max-time";
  argv[n++] = "30";
  argv[n++] = "-X";
  argv[n++] = method;
  argv[n++] = "-o";
  argv[n++] = out_file;
  argv[n++] = "-D";
  argv[n++] = hdr_file;
  argv[n++] = "-w";
  argv[n++] = "%{http_code}";
  if (body_file != NULL) {
    /* curl adds its own form type unless told otherwise; "Content-Type:"
     * with nothing after it removes the header altogether. */
    argv[n++] = "-H";
    argv[n++] = type_hdr;
    argv[n++] = "--data-binary";
    argv[n++] = data_arg;
  }
  argv[n++] = url;
  argv[n] = NULL;
  unlink(code_file); /* e2e_run appends */
  if (e2e_run(argv, code_file) != 0) return -1;
  size_t len = 0;
  char *code = (char *)e2e_read_file(code_file, &len);
  int status = code ? atoi(code) : -1;
  free(code);
  return status;
}
