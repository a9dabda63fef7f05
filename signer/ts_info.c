/* kyso — what RFC 3161 replies and tokens say, for people and the gRPC
 * reply (signer_ts_describe), and the rejection a TSA answers when it
 * cannot issue (signer_tsa_refusal). Nothing here verifies anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>

#include "kyso/x509_text.h"
#include "signer_internal.h"

/* PKIStatus values (RFC 3161 2.4.2), indexed by value. */
static const char *const status_names[] = {"granted",           "grantedWithMods",
                                           "rejection",         "waiting",
                                           "revocationWarning", "revocationNotification"};

/* PKIFailureInfo bits that RFC 3161 names. */
static const struct {
  int bit;
  const char *name;
} failure_names[] = {
    {SIGNER_TSA_FAIL_BAD_ALG, "badAlg"},
    {SIGNER_TSA_FAIL_BAD_REQUEST, "badRequest"},
    {SIGNER_TSA_FAIL_BAD_DATA_FORMAT, "badDataFormat"},
    {SIGNER_TSA_FAIL_TIME_NOT_AVAILABLE, "timeNotAvailable"},
    {SIGNER_TSA_FAIL_UNACCEPTED_POLICY, "unacceptedPolicy"},
    {SIGNER_TSA_FAIL_UNACCEPTED_EXTENSION, "unacceptedExtension"},
    {SIGNER_TSA_FAIL_ADD_INFO_NOT_AVAILABLE, "addInfoNotAvailable"},
    {SIGNER_TSA_FAIL_SYSTEM_FAILURE, "systemFailure"},
};
#define N_FAILURES (sizeof(failure_names) / sizeof(failure_names[0]))

static const char *failure_name(int bit) {
  for (size_t i = 0; i < N_FAILURES; i++)
    if (failure_names[i].bit == bit) return failure_names[i].name;
  return NULL;
}

/* Appends src to out (capacity size, NUL-terminated), control characters
 * as '?': the text comes from a remote TSA and ends up in logs. */
static void append_clean(char *out, size_t size, const char *src, size_t len) {
  size_t n = strlen(out);
  for (size_t i = 0; i < len && n + 1 < size; i++)
    out[n++] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
  out[n] = '\0';
}

static void fill_status(TS_STATUS_INFO *si, signer_ts_info *out) {
  out->status = (int)ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(si);
  for (int bit = 0; fi != NULL && bit < 32; bit++)
    if (ASN1_BIT_STRING_get_bit(fi, bit)) out->failure_info |= 1u << bit;
  const STACK_OF(ASN1_UTF8STRING) *text = TS_STATUS_INFO_get0_text(si);
  for (int i = 0; i < sk_ASN1_UTF8STRING_num(text); i++) {
    const ASN1_UTF8STRING *s = sk_ASN1_UTF8STRING_value(text, i);
    if (i > 0) append_clean(out->status_text, sizeof(out->status_text), "; ", 2);
    append_clean(out->status_text, sizeof(out->status_text),
                 (const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
  }
}

void signer__ts_status_line(TS_STATUS_INFO *si, char *out, size_t size) {
  signer_ts_info info;
  memset(&info, 0, sizeof(info));
  fill_status(si, &info);
  const char *status = info.status >= 0 && info.status < 6 ? status_names[info.status] : "unknown";
  int n = snprintf(out, size, "%s (PKIStatus %d)", status, info.status);
  for (int bit = 0, first = 1; bit < 32 && n > 0 && (size_t)n < size; bit++) {
    if (!(info.failure_info & (1u << bit))) continue;
    const char *name = failure_name(bit);
    if (name != NULL)
      n += snprintf(out + n, size - (size_t)n, "%s%s", first ? ", failure " : "+", name);
    else
      n += snprintf(out + n, size - (size_t)n, "%sbit %d", first ? ", failure " : "+", bit);
    first = 0;
  }
  if (info.status_text[0] != '\0' && n > 0 && (size_t)n < size)
    snprintf(out + n, size - (size_t)n, ": %s", info.status_text);
}

/* genTime to seconds and milliseconds. GeneralizedTime may carry any number
 * of fraction digits (RFC 3161 2.4.2); we keep three. */
static int gen_time(const ASN1_GENERALIZEDTIME *gt, time_t *sec, unsigned *ms) {
  struct tm tm;
  if (gt == NULL || !ASN1_TIME_to_tm(gt, &tm)) return 0;
  *sec = timegm(&tm);
  *ms = 0;
  const char *s = (const char *)ASN1_STRING_get0_data(gt);
  int len = ASN1_STRING_length(gt);
  const char *dot = memchr(s, '.', (size_t)len);
  for (int i = 1, scale = 100; dot != NULL && i <= 3 && dot + i < s + len; i++, scale /= 10) {
    if (dot[i] < '0' || dot[i] > '9') break;
    *ms += (unsigned)(dot[i] - '0') * (unsigned)scale;
  }
  return 1;
}

/* The signer's subject when the token carries its certificate, else the
 * TSTInfo's tsa name, else "". */
static void tsa_text(PKCS7 *token, TS_TST_INFO *tst, char *out, size_t size) {
  STACK_OF(X509) *signers = PKCS7_get0_signers(token, NULL, 0);
  out[0] = '\0';
  if (sk_X509_num(signers) == 1) {
    kyso_x509_name_utf8(X509_get_subject_name(sk_X509_value(signers, 0)), out, size);
  } else {
    GENERAL_NAME *gn = TS_TST_INFO_get_tsa(tst);
    BIO *b = NULL;
    char *data = NULL;
    long len;
    if (gn != NULL && gn->type == GEN_DIRNAME) {
      kyso_x509_name_utf8(gn->d.directoryName, out, size);
    } else if (gn != NULL && (b = BIO_new(BIO_s_mem())) != NULL && GENERAL_NAME_print(b, gn) > 0 &&
               (len = BIO_get_mem_data(b, &data)) > 0) {
      append_clean(out, size, data, (size_t)len);
    }
    BIO_free(b);
  }
  sk_X509_free(signers);
  ERR_clear_error(); /* no certificate in the token is no error here */
}

static void fill_token(PKCS7 *token, TS_TST_INFO *tst, signer_ts_info *out) {
  BIGNUM *bn = ASN1_INTEGER_to_BN(TS_TST_INFO_get_serial(tst), NULL);
  char *dec = bn != NULL ? BN_bn2dec(bn) : NULL;
  out->has_token = 1;
  snprintf(out->serial, sizeof(out->serial), "%s", dec != NULL ? dec : "");
  OPENSSL_free(dec);
  BN_free(bn);
  if (gen_time(TS_TST_INFO_get_time(tst), &out->gen_time, &out->gen_time_ms)) {
    struct tm tm;
    char day[32];
    gmtime_r(&out->gen_time, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out->gen_time_text, sizeof(out->gen_time_text), "%s.%03uZ", day, out->gen_time_ms);
  }
  ASN1_OBJECT *policy = TS_TST_INFO_get_policy_id(tst);
  if (policy != NULL) OBJ_obj2txt(out->policy, sizeof(out->policy), policy, 1);
  X509_ALGOR *alg = TS_MSG_IMPRINT_get_algo(TS_TST_INFO_get_msg_imprint(tst));
  if (alg != NULL) {
    int nid = OBJ_obj2nid(alg->algorithm);
    if (nid != NID_undef)
      snprintf(out->hash, sizeof(out->hash), "%s", OBJ_nid2sn(nid));
    else
      OBJ_obj2txt(out->hash, sizeof(out->hash), alg->algorithm, 1);
  }
  tsa_text(token, tst, out->tsa, sizeof(out->tsa));
}

/* A bare token is what a granted reply carries, so its status is granted. */
kyso_status signer_ts_describe(const uint8_t *der, size_t len, int is_token, signer_ts_info *out,
                               kyso_err *err) {
  kyso_status st = KYSO_OK;
  const unsigned char *p = der;
  TS_RESP *resp = NULL;
  PKCS7 *token = NULL;
  TS_TST_INFO *tst = NULL;
  const char *what = is_token ? "time-stamp token" : "TimeStampResp";
  if (out == NULL || (der == NULL && len > 0))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_ts_describe: input and output required");
  memset(out, 0, sizeof(*out));
  out->status = -1;
  if (len == 0 || len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a %s of %zu bytes is not one", what, len);
  ERR_clear_error();
  if (is_token) {
    if ((token = d2i_PKCS7(NULL, &p, (long)len)) == NULL || p != der + len ||
        (tst = PKCS7_to_TS_TST_INFO(token)) == NULL) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "not a DER %s (ContentInfo of a SignedData over a TSTInfo)", what);
      goto out;
    }
    out->status = TS_STATUS_GRANTED;
    fill_token(token, tst, out);
  } else {
    /* d2i_TS_RESP also refuses a granted reply without a token and a
     * token whose TSTInfo does not parse. */
    if ((resp = d2i_TS_RESP(NULL, &p, (long)len)) == NULL || p != der + len) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "not a DER %s", what);
      goto out;
    }
    fill_status(TS_RESP_get_status_info(resp), out);
    if (TS_RESP_get_token(resp) != NULL && TS_RESP_get_tst_info(resp) != NULL)
      fill_token(TS_RESP_get_token(resp), TS_RESP_get_tst_info(resp), out);
  }
out:
  TS_TST_INFO_free(tst);
  PKCS7_free(token);
  TS_RESP_free(resp);
  ERR_clear_error();
  return st;
}

/* A copy of text with every byte that does not start or continue a valid
 * UTF-8 sequence replaced by '?': statusString is a UTF8String. */
static char *utf8_clean(const char *text) {
  size_t n = strlen(text);
  char *out = malloc(n + 1);
  if (out == NULL) return NULL;
  memcpy(out, text, n + 1);
  for (size_t i = 0; i < n;) {
    unsigned long c;
    int used = UTF8_getc((const unsigned char *)out + i, (int)(n - i), &c);
    if (used <= 0) {
      out[i++] = '?';
      continue;
    }
    i += (size_t)used;
  }
  return out;
}

/* Appends an ASN1_TYPE of type holding *value to seq. *value (any
 * ASN1_STRING: INTEGER, UTF8String, BIT STRING …) becomes seq's, or is
 * freed on failure; either way *value is NULL afterwards. */
static int push(ASN1_SEQUENCE_ANY *seq, int type, ASN1_STRING **value) {
  ASN1_TYPE *t = ASN1_TYPE_new();
  if (t == NULL) {
    ASN1_STRING_free(*value);
    *value = NULL;
    return 0;
  }
  ASN1_TYPE_set(t, type, *value);
  *value = NULL;
  if (!sk_ASN1_TYPE_push(seq, t)) {
    ASN1_TYPE_free(t);
    return 0;
  }
  return 1;
}

/* Appends seq, DER-encoded, to outer as one SEQUENCE element. */
static int push_sequence(ASN1_SEQUENCE_ANY *outer, const ASN1_SEQUENCE_ANY *seq) {
  unsigned char *der = NULL;
  int n = i2d_ASN1_SEQUENCE_ANY(seq, &der);
  ASN1_STRING *s = n > 0 ? ASN1_STRING_type_new(V_ASN1_SEQUENCE) : NULL;
  if (s == NULL) {
    OPENSSL_free(der);
    return 0;
  }
  ASN1_STRING_set0(s, der, n);
  return push(outer, V_ASN1_SEQUENCE, &s);
}

/* OpenSSL 3.0 has no setters for a TS_STATUS_INFO's text and failure info
 * outside its own responder, so the TimeStampResp is put together from
 * generic ASN.1 pieces:
 *   SEQUENCE { SEQUENCE { INTEGER rejection, SEQUENCE { UTF8String },
 *                         BIT STRING } }
 * and parsed back as a TS_RESP before it is handed out. */
kyso_status signer_tsa_refusal(int failure_bit, const char *text, uint8_t **der, size_t *der_len,
                               kyso_err *err) {
  kyso_status st = KYSO_OK;
  ASN1_SEQUENCE_ANY *texts = NULL, *info = NULL, *resp = NULL;
  ASN1_INTEGER *status = NULL;
  ASN1_UTF8STRING *utf8 = NULL;
  ASN1_BIT_STRING *fail = NULL;
  TS_RESP *check = NULL;
  unsigned char *out = NULL;
  char *clean = NULL;
  if (der == NULL || der_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_tsa_refusal: output is required");
  *der = NULL;
  *der_len = 0;
  if (failure_name(failure_bit) == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "PKIFailureInfo bit %d is not one RFC 3161 defines", failure_bit);
  if (text != NULL && strlen(text) > KYSO_MAX_METADATA)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "refusal text of %zu bytes is over %d",
                     strlen(text), KYSO_MAX_METADATA);
  ERR_clear_error();
  int ok = (info = sk_ASN1_TYPE_new_null()) != NULL && (resp = sk_ASN1_TYPE_new_null()) != NULL &&
           (status = ASN1_INTEGER_new()) != NULL &&
           ASN1_INTEGER_set(status, TS_STATUS_REJECTION) && push(info, V_ASN1_INTEGER, &status);
  if (ok && text != NULL && text[0] != '\0')
    ok = (clean = utf8_clean(text)) != NULL && (texts = sk_ASN1_TYPE_new_null()) != NULL &&
         (utf8 = ASN1_UTF8STRING_new()) != NULL && ASN1_STRING_set(utf8, clean, -1) &&
         push(texts, V_ASN1_UTF8STRING, &utf8) && push_sequence(info, texts);
  ok = ok && (fail = ASN1_BIT_STRING_new()) != NULL &&
       ASN1_BIT_STRING_set_bit(fail, failure_bit, 1) && push(info, V_ASN1_BIT_STRING, &fail) &&
       push_sequence(resp, info);
  if (!ok) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory building a time-stamp refusal");
    goto out;
  }
  int n = i2d_ASN1_SEQUENCE_ANY(resp, &out);
  const unsigned char *p = out;
  if (n <= 0 || (check = d2i_TS_RESP(NULL, &p, n)) == NULL || p != out + n) {
    kyso_fail(err, KYSO_INTERNAL, "the refusal (%s) did not encode as a TimeStampResp:",
              failure_name(failure_bit));
    st = kyso_err_add_openssl(err);
    goto out;
  }
  *der = out;
  *der_len = (size_t)n;
  out = NULL;
out:
  OPENSSL_free(out);
  TS_RESP_free(check);
  ASN1_BIT_STRING_free(fail);
  ASN1_UTF8STRING_free(utf8);
  ASN1_INTEGER_free(status);
  sk_ASN1_TYPE_pop_free(texts, ASN1_TYPE_free);
  sk_ASN1_TYPE_pop_free(info, ASN1_TYPE_free);
  sk_ASN1_TYPE_pop_free(resp, ASN1_TYPE_free);
  free(clean);
  ERR_clear_error();
  return st;
}
