/* kyso — distinguished names in OpenSSL's one-line form, "/C=VN/O=.../CN=...",
 * parsed into an X509_NAME with UTF-8 values (Vietnamese names need it).
 * A backslash takes the next byte literally ("\/" is a slash in a value);
 * multi-valued RDNs ('+') are not supported, '+' is an ordinary byte. */
#include <string.h>

#include <openssl/err.h>
#include <openssl/objects.h>

#include "signer_internal.h"

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    unsigned min, cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return 0;
    }
    if (n - i < len) return 0;
    for (size_t j = 1; j < len; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += len;
  }
  return 1;
}

static int type_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-';
}

/* Adds one "type=value" component starting at *pp (just after its '/'),
 * unescaping the value into val; *pp ends on the next '/' or the NUL. */
static kyso_status add_component(X509_NAME *name, const char *subject, const char **pp,
                                 char *type, char *val, kyso_err *err) {
  const char *p = *pp;
  size_t tn = 0, vn = 0;
  while (type_char(*p)) type[tn++] = *p++;
  type[tn] = '\0';
  if (tn == 0 || *p != '=')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "subject component at byte %zu is not TYPE=value", (size_t)(*pp - subject));
  for (p++; *p != '\0' && *p != '/'; p++) {
    if (*p == '\\' && *++p == '\0')
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject ends in a lone backslash");
    val[vn++] = *p;
  }
  val[vn] = '\0';
  *pp = p;
  if (vn == 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject component '%s' has an empty value",
                     type);
  if (!utf8_valid((const unsigned char *)val, vn))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject component '%s' is not valid UTF-8",
                     type);
  if (OBJ_txt2nid(type) == NID_undef)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject attribute type '%s' is unknown", type);
  if (!X509_NAME_add_entry_by_txt(name, type, MBSTRING_UTF8, (const unsigned char *)val,
                                  (int)vn, -1, 0)) {
    kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject component '%s=%s' is not acceptable", type,
              val);
    kyso_err_add_openssl(err);
    return KYSO_INVALID_ARGUMENT;
  }
  return KYSO_OK;
}

kyso_status signer__subject_parse(const char *subject, X509_NAME **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char type[KYSO_MAX_SUBJECT + 1], val[KYSO_MAX_SUBJECT + 1];
  X509_NAME *name = NULL;
  *out = NULL;
  if (subject == NULL || subject[0] != '/')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "subject must look like \"/C=VN/O=.../CN=...\"");
  size_t len = strnlen(subject, KYSO_MAX_SUBJECT + 1);
  if (len > KYSO_MAX_SUBJECT)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject is longer than %d bytes",
                     KYSO_MAX_SUBJECT);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)subject[i] < 0x20 || subject[i] == 0x7f)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "subject contains a control character");
  if ((name = X509_NAME_new()) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a subject");
  const char *p = subject;
  while (*p == '/') {
    p++;
    if ((st = add_component(name, subject, &p, type, val, err)) != KYSO_OK) goto out;
  }
  /* add_component stops only on '/' or NUL, so p is at the end here. */
  *out = name;
  name = NULL;
out:
  X509_NAME_free(name);
  return st;
}
