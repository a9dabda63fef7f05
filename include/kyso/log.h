/* kyso — one-line structured logs on stderr. Never pass secrets. */
#ifndef KYSO_LOG_H
#define KYSO_LOG_H

#include "kyso/status.h"

typedef enum { KYSO_LOG_DEBUG, KYSO_LOG_INFO, KYSO_LOG_WARN, KYSO_LOG_ERROR } kyso_log_level;

void kyso_log_set_level(kyso_log_level min);
/* Parses "debug", "info", "warn", "error"; INVALID_ARGUMENT otherwise. */
kyso_status kyso_log_parse_level(const char *s, kyso_log_level *out, kyso_err *err);
void kyso_log(kyso_log_level level, const char *fmt, ...) KYSO_PRINTF(2, 3);

#endif
