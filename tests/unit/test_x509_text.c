/* kyso_x509_name_utf8: UTF-8 kept, control characters (a forged name's
 * newline, escape, NUL) replaced so a name cannot forge a log line. */
#include <openssl/x509.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "kyso/x509_text.h"

static void test_utf8_kept_controls_replaced(void **state) {
  (void)state;
  X509_NAME *n = X509_NAME_new();
  static const unsigned char org[] = "UBND T\xe1\xbb\x89nh\n2026-01-01 level=error\x1b[2J";
  static const unsigned char cn[] = {'a', 0, 'b'};
  char out[256];
  assert_int_equal(X509_NAME_add_entry_by_txt(n, "C", MBSTRING_UTF8, (const unsigned char *)"VN",
                                              -1, -1, 0), 1);
  assert_int_equal(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, org, -1, -1, 0), 1);
  assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, cn, 3, -1, 0), 1);
  kyso_x509_name_utf8(n, out, sizeof(out));
  assert_string_equal(out, "/C=VN/O=UBND T\xe1\xbb\x89nh?2026-01-01 level=error?[2J/CN=a?b");
  X509_NAME_free(n);
}

static void test_truncates_whole_entries(void **state) {
  (void)state;
  X509_NAME *n = X509_NAME_new();
  char out[12];
  assert_int_equal(X509_NAME_add_entry_by_txt(n, "C", MBSTRING_UTF8, (const unsigned char *)"VN",
                                              -1, -1, 0), 1);
  assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                              (const unsigned char *)"a long common name", -1, -1,
                                              0), 1);
  kyso_x509_name_utf8(n, out, sizeof(out));
  assert_string_equal(out, "/C=VN");
  X509_NAME_free(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8_kept_controls_replaced),
      cmocka_unit_test(test_truncates_whole_entries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
