/* kyso — PEM files for TLS: read them, and check a certificate and its key
 * belong together before a handshake would fail with a bare UNAVAILABLE. */
#ifndef KYSO_PEM_H
#define KYSO_PEM_H

#include "kyso/status.h"
#include "kyso/util.h"

/* PEM files (CA bundles, certificate chains, keys): far larger is a wrong path. */
#define KYSO_MAX_PEM (1024 * 1024)

/* Reads a PEM file into out as a NUL-terminated string (out->len counts the
 * NUL); `what` names it in errors ("TLS key"). Caller frees with
 * kyso_buf_free(out, 1). */
kyso_status kyso_pem_read(const char *path, const char *what, kyso_buf *out,
                          kyso_err *err) KYSO_MUST_CHECK;

/* INVALID_ARGUMENT naming the files unless the first certificate of
 * cert_pem parses and key_pem is its unencrypted private key. */
kyso_status kyso_pem_check_pair(const kyso_buf *cert_pem, const kyso_buf *key_pem,
                                const char *cert_path, const char *key_path,
                                kyso_err *err) KYSO_MUST_CHECK;

#endif
