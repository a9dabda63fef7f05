/* kyso — POSTing to another server (an external TSA) with libcurl: one easy
 * handle per call, the reply and the time capped, and errors that name the
 * URL (without its password) and say what to check. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http_internal.h"
#include "kyso/http.h"
#include "kyso/util.h"

#define HTTP__DEFAULT_TIMEOUT_MS 10000
#define HTTP__DEFAULT_MAX_REPLY (1024 * 1024)
/* URLs are shown in messages; a longer one is cut. */
#define HTTP__MAX_SHOWN_URL 256

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_ready = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe on every libcurl; run it exactly once. */
static void curl_init(void) { curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct sink {
  kyso_buf buf;
  int too_big; /* the reply passed max_reply (not: memory ran out) */
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *arg) {
  sink *k = arg;
  size_t len = size * n;
  if (len > k->buf.max - k->buf.len) {
    k->too_big = 1;
    return 0; /* anything but len makes curl stop with CURLE_WRITE_ERROR */
  }
  return kyso_buf_append(&k->buf, p, len, "reply", NULL) == KYSO_OK ? len : 0;
}

/* Accepts http:// and https:// URLs only, and writes the URL without any
 * password into shown, for messages and logs. */
static kyso_status check_url(const char *url, char *shown, size_t cap, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CURLU *u = NULL;
  char *scheme = NULL, *clean = NULL;
  CURLUcode rc;

  snprintf(shown, cap, "%s", url ? url : "");
  if (url == NULL || url[0] == '\0') {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "http post: a URL is required");
    goto out;
  }
  if ((u = curl_url()) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "http post: out of memory");
    goto out;
  }
  if ((rc = curl_url_set(u, CURLUPART_URL, url, 0)) != CURLUE_OK ||
      (rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0)) != CURLUE_OK) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "URL '%s' cannot be used (%s); write it as http://HOST[:PORT]/PATH or "
                   "https://HOST[:PORT]/PATH", url, curl_url_strerror(rc));
    goto out;
  }
  if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "URL '%s' uses %s://; only http:// and https:// are supported", url, scheme);
    goto out;
  }
  if (curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_URL, &clean, 0) == CURLUE_OK)
    snprintf(shown, cap, "%s", clean);
out:
  curl_free(scheme);
  curl_free(clean);
  curl_url_cleanup(u);
  return st;
}

/* Turns a failed transfer into a status and a message saying what to check. */
static kyso_status transfer_failed(CURLcode rc, const char *detail, const sink *k,
                                   const char *url, const http_post_opts *o,
                                   unsigned timeout_ms, kyso_err *err) {
  const char *ca = o->ca_file != NULL && o->ca_file[0] != '\0' ? o->ca_file : NULL;
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "%s did not answer within %u ms (%s); check that the server is up and "
                     "reachable, or allow a longer timeout", url, timeout_ms, detail);
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "cannot connect to %s (%s); check that the server is up and the URL's "
                     "host and port are right", url, detail);
  case CURLE_FILESIZE_EXCEEDED:
  case CURLE_WRITE_ERROR:
    if (rc == CURLE_WRITE_ERROR && !k->too_big)
      return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "reading the reply from %s: out of memory",
                       url);
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "the reply from %s is larger than %zu bytes; check that the URL names "
                     "the right service", url, k->buf.max);
  case CURLE_PEER_FAILED_VERIFICATION:
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "TLS verification of %s failed (%s); check that %s%s%s holds the CA that "
                     "issued the server's certificate and that the certificate names the "
                     "URL's host", url, detail, ca ? "the CA file '" : "the system trust store",
                     ca ? ca : "", ca ? "'" : "");
  case CURLE_SSL_CACERT_BADFILE:
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "cannot load the CA file '%s' to check %s (%s); check the path and that "
                     "it holds PEM certificates", ca ? ca : "(system)", url, detail);
  case CURLE_SSL_CONNECT_ERROR:
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "TLS handshake with %s failed (%s); check that the server speaks HTTPS "
                     "on that port", url, detail);
  case CURLE_OUT_OF_MEMORY:
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "POST to %s: out of memory", url);
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "URL %s cannot be used (%s); write it as http:// or https://HOST/PATH",
                     url, detail);
  default:
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "POST to %s failed (%s); check that the server is up and the URL is "
                     "right", url, detail);
  }
}

/* The first line of a text body, printable ASCII only (it ends up in logs). */
static void first_line(const kyso_buf *b, char *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < b->len && n + 1 < cap && b->data[i] != '\n'; i++)
    if (b->data[i] >= 0x20 && b->data[i] < 0x7f) out[n++] = (char)b->data[i];
  out[n] = '\0';
}

/* Checks status and type of a completed exchange. */
static kyso_status check_reply(CURL *h, const sink *k, const char *url,
                               const http_post_opts *o, kyso_err *err) {
  long code = 0;
  char *type = NULL;
  curl_off_t retry = 0;
  char text[161] = "";

  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &type);
  if (code != 200 && http__media_type_is(type, "text/plain")) first_line(&k->buf, text, sizeof(text));
  if (code >= 500) {
    curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry);
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "%s answered HTTP %ld%s%s%s; the server is failing or overloaded, try "
                     "again %s", url, code, text[0] ? " (" : "", text, text[0] ? ")" : "",
                     retry > 0 ? "after the time it asked for" : "later");
  }
  if (code != 200)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "%s answered HTTP %ld%s%s%s; check the URL (host, port and path) and "
                     "that it names the right service", url, code, text[0] ? " (" : "", text,
                     text[0] ? ")" : "");
  if (!http__media_type_is(type, o->accept_type))
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "%s answered with Content-Type '%s', not %s; check that the URL names "
                     "the right service", url, type ? type : "(none)", o->accept_type);
  return KYSO_OK;
}

/* Fills in every option of the transfer; CURLE_OK or the first failure. */
static CURLcode set_options(CURL *h, const http_post_opts *o, struct curl_slist *hdr,
                            const uint8_t *body, size_t body_len, unsigned timeout_ms,
                            sink *k, char *ebuf) {
  CURLcode rc = curl_easy_setopt(h, CURLOPT_URL, o->url);
  /* Only http(s), never a redirect: the URL is configuration, and a
   * redirect could send the body somewhere it was not meant to go. */
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  /* No signals: this runs on server threads, and the resolver's alarm()
   * would hit the whole process. */
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_USERAGENT, "kyso");
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_POST, 1L);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
  /* A declared length over the cap fails before the body is read. */
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)k->buf.max);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
  if (rc == CURLE_OK) rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
  if (rc == CURLE_OK && o->ca_file != NULL && o->ca_file[0] != '\0')
    rc = curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
  return rc;
}

kyso_status http_post(const http_post_opts *o, const uint8_t *body, size_t body_len,
                      uint8_t **reply, size_t *reply_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CURL *h = NULL;
  struct curl_slist *hdr = NULL;
  sink k = {.too_big = 0};
  char url[HTTP__MAX_SHOWN_URL];
  char line[256];
  char ebuf[CURL_ERROR_SIZE] = "";
  CURLcode rc;

  *reply = NULL;
  *reply_len = 0;
  kyso_buf_init(&k.buf, o->max_reply ? o->max_reply : HTTP__DEFAULT_MAX_REPLY);
  unsigned timeout_ms = o->timeout_ms ? o->timeout_ms : HTTP__DEFAULT_TIMEOUT_MS;
  if ((st = check_url(o->url, url, sizeof(url), err)) != KYSO_OK) goto out;
  if (o->content_type == NULL || o->content_type[0] == '\0' || o->accept_type == NULL ||
      o->accept_type[0] == '\0') {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "POST to %s: content and accept types are required",
                   url);
    goto out;
  }
  pthread_once(&curl_once, curl_init);
  if (curl_ready != CURLE_OK) {
    st = kyso_fail(err, KYSO_INTERNAL, "POST to %s: libcurl did not initialise (%s)", url,
                   curl_easy_strerror(curl_ready));
    goto out;
  }
  if ((h = curl_easy_init()) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "POST to %s: out of memory", url);
    goto out;
  }
  struct curl_slist *next = NULL;
  snprintf(line, sizeof(line), "Content-Type: %s", o->content_type);
  if ((next = curl_slist_append(hdr, line)) != NULL) hdr = next;
  snprintf(line, sizeof(line), "Accept: %s", o->accept_type);
  if (next != NULL && (next = curl_slist_append(hdr, line)) != NULL) hdr = next;
  /* No "Expect: 100-continue": the bodies are small, and waiting for a
   * server that ignores it would cost a second per call. */
  if (next != NULL && (next = curl_slist_append(hdr, "Expect:")) != NULL) hdr = next;
  if (next == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "POST to %s: out of memory", url);
    goto out;
  }
  if ((rc = set_options(h, o, hdr, body, body_len, timeout_ms, &k, ebuf)) != CURLE_OK) {
    st = kyso_fail(err, KYSO_INTERNAL, "POST to %s: libcurl refused an option (%s)", url,
                   curl_easy_strerror(rc));
    goto out;
  }
  if ((rc = curl_easy_perform(h)) != CURLE_OK) {
    st = transfer_failed(rc, ebuf[0] ? ebuf : curl_easy_strerror(rc), &k, url, o, timeout_ms,
                         err);
    goto out;
  }
  if ((st = check_reply(h, &k, url, o, err)) != KYSO_OK) goto out;
  /* Always hand back a buffer, even for an empty body. */
  if (k.buf.data == NULL && (k.buf.data = malloc(1)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "POST to %s: out of memory", url);
    goto out;
  }
  *reply = k.buf.data;
  *reply_len = k.buf.len;
out:
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  if (st != KYSO_OK) kyso_buf_free(&k.buf, 0);
  return st;
}
