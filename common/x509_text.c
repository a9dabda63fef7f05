/* kyso — X.509 names as UTF-8 text. Names come from certificates anyone
 * can make (an external TSA's, a forged signer's), and the text ends up in
 * logs and terminals: control characters become '?', so a name can never
 * start a new log line or drive a terminal. */
#include <openssl/objects.h>
#include <stdio.h>
#include <string.h>

#include "kyso/x509_text.h"

void kyso_x509_name_utf8(const X509_NAME *name, char *out, size_t size) {
  size_t n = 0;
  out[0] = '\0';
  for (int i = 0; i < X509_NAME_entry_count(name); i++) {
    const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    const char *sn = nid == NID_undef ? "?" : OBJ_nid2sn(nid);
    unsigned char *v = NULL;
    int len = ASN1_STRING_to_UTF8(&v, X509_NAME_ENTRY_get_data(e));
    if (len < 0) continue;
    for (int j = 0; j < len; j++)
      if (v[j] < 0x20 || v[j] == 0x7f) v[j] = '?';
    size_t need = 2 + strlen(sn) + strlen((char *)v);
    if (n + need < size) n += (size_t)snprintf(out + n, size - n, "/%s=%s", sn, (char *)v);
    OPENSSL_free(v);
    if (n + need >= size) break;
  }
}
