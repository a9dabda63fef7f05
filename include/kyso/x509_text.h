/* kyso — X.509 names as text people can read. */
#ifndef KYSO_X509_TEXT_H
#define KYSO_X509_TEXT_H

#include <stddef.h>

#include <openssl/x509.h>

/* The name in OpenSSL's "/C=VN/O=.../CN=..." form, but as UTF-8 rather than
 * X509_NAME_oneline's \xNN escapes, so Vietnamese names read as written.
 * Cut at a whole attribute when out is too small. */
void kyso_x509_name_utf8(const X509_NAME *name, char *out, size_t size);

#endif
