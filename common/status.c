/* kyso — status codes and error messages. */
#include "kyso/status.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
  int grpc;
  const char *text;
} status_table[] = {
#define KYSO__ROW(name, grpc, text) {grpc, text},
    KYSO_STATUS_MAP(KYSO__ROW)
#undef KYSO__ROW
};

#define STATUS_COUNT (sizeof(status_table) / sizeof(status_table[0]))

const char *kyso_strerror(kyso_status code) {
  if ((size_t)code >= STATUS_COUNT) return "unknown status";
  return status_table[code].text;
}

int kyso_status_to_grpc(kyso_status code) {
  if ((size_t)code >= STATUS_COUNT) return 2; /* GRPC_STATUS_UNKNOWN */
  return status_table[code].grpc;
}

kyso_status kyso_status_from_grpc(int grpc) {
  for (size_t i = 0; i < STATUS_COUNT; i++)
    if (status_table[i].grpc == grpc) return (kyso_status)i;
  return KYSO_INTERNAL; /* UNKNOWN and codes kyso never sends */
}

kyso_status kyso_fail(kyso_err *err, kyso_status code, const char *fmt, ...) {
  if (err == NULL) return code;
  va_list ap;
  va_start(ap, fmt);
  err->code = code;
  vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
  va_end(ap);
  return code;
}

kyso_status kyso_err_wrap(kyso_err *err, const char *fmt, ...) {
  if (err == NULL) return KYSO_INTERNAL;
  char prefix[KYSO_ERR_MSG_MAX];
  char old[KYSO_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof(prefix), fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof(old));
  size_t n = strlen(prefix);
  if (n > sizeof(err->msg) - 3) n = sizeof(err->msg) - 3;
  memcpy(err->msg, prefix, n);
  memcpy(err->msg + n, ": ", 2);
  size_t rest = sizeof(err->msg) - n - 3;
  size_t olen = strnlen(old, rest);
  memcpy(err->msg + n + 2, old, olen);
  err->msg[n + 2 + olen] = '\0';
  return err->code;
}

void kyso_err_clear(kyso_err *err) {
  if (err == NULL) return;
  err->code = KYSO_OK;
  err->msg[0] = '\0';
}

kyso_status kyso_err_add_openssl(kyso_err *err) {
  unsigned long e;
  const char *data = NULL;
  int flags = 0;
  /* Keep OpenSSL's detail text (ERR_TXT_STRING): that is where, e.g., the
   * X.509 verification reason is. */
  while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
    if (err == NULL) continue;
    size_t used = strlen(err->msg);
    const char *lib = ERR_lib_error_string(e), *reason = ERR_reason_error_string(e);
    int has_data = (flags & ERR_TXT_STRING) != 0 && data != NULL && data[0] != '\0';
    if (used + 4 < sizeof(err->msg))
      snprintf(err->msg + used, sizeof(err->msg) - used, " [%s: %s%s%s]", lib ? lib : "?",
               reason ? reason : "unknown reason", has_data ? ": " : "", has_data ? data : "");
  }
  return err != NULL ? err->code : KYSO_INTERNAL;
}

void kyso_wipe(void *p, size_t n) {
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}
