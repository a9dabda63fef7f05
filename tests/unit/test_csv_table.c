/* cli/csv_table: the bulk import's CSV reader, on files written here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "csv_table.h"

static const char *const HEADER[] = {"code", "name", "parent"};

/* Loads text as a file; the status, *t on OK, the message in err. */
static kyso_status load(const char *text, size_t max_rows, csv_table **t, kyso_err *err) {
  char path[] = "/tmp/kyso-test-csv-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  memset(err, 0, sizeof(*err));
  kyso_status st = csv_table_load(path, HEADER, 3, max_rows, t, err);
  unlink(path);
  return st;
}

static void test_quoted_fields_and_lines(void **state) {
  (void)state;
  csv_table *t = NULL;
  kyso_err err;
  assert_int_equal(load("code,name,parent\r\nH37,\"UBND, Tỉnh\",\n"
                        "H37.D01,\"Sở \"\"Nội\"\" vụ\nmới\",H37\n",
                        10, &t, &err),
                   KYSO_OK);
  assert_int_equal(csv_table_rows(t), 2);
  assert_string_equal(csv_table_field(t, 0, 1), "UBND, Tỉnh");
  assert_string_equal(csv_table_field(t, 0, 2), "");
  assert_string_equal(csv_table_field(t, 1, 1), "Sở \"Nội\" vụ\nmới");
  assert_int_equal(csv_table_line(t, 0), 2);
  assert_int_equal(csv_table_line(t, 1), 3);
  csv_table_free(t);
}

static void test_byte_order_mark(void **state) {
  (void)state;
  csv_table *t = NULL;
  kyso_err err;
  assert_int_equal(load("\xEF\xBB\xBF" "code,name,parent\nH37,UBND,\n", 10, &t, &err), KYSO_OK);
  assert_int_equal(csv_table_rows(t), 1);
  csv_table_free(t);
}

static void test_refusals_say_where(void **state) {
  (void)state;
  static const struct {
    const char *text, *says;
  } bad[] = {
      {"", "empty"},
      {"code,name\nH37,UBND\n", "2 fields, want 3"},
      {"code,title,parent\nH37,UBND,\n", "column 2 of the header is 'title'"},
      {"code,name,parent\nH37,UBND,,extra\n", "more fields than the 3 columns"},
      {"code,name,parent\nH37,\"UBND,\n", "ends inside a quoted field"},
      {"code,name,parent\nA,a,\nB,b,\nC,c,\n", "more than 2 rows"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    csv_table *t = (csv_table *)1;
    kyso_err err;
    assert_int_equal(load(bad[i].text, 2, &t, &err), KYSO_INVALID_ARGUMENT);
    assert_null(t);
    if (strstr(err.msg, bad[i].says) == NULL) fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].says);
  }
}

static void test_missing_file(void **state) {
  (void)state;
  csv_table *t = NULL;
  kyso_err err = {0};
  assert_int_equal(csv_table_load("/nonexistent/units.csv", HEADER, 3, 10, &t, &err),
                   KYSO_NOT_FOUND);
  assert_non_null(strstr(err.msg, "/nonexistent/units.csv"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quoted_fields_and_lines),
      cmocka_unit_test(test_byte_order_mark),
      cmocka_unit_test(test_refusals_say_where),
      cmocka_unit_test(test_missing_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
