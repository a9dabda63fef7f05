/* Unit tests: kysod's input checks (names, text, key labels), table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kysod.h"

static void test_names(void **state) {
  (void)state;
  static const struct { const char *in; kyso_status want; } cases[] = {
      {"nguyen.van.a", KYSO_OK},
      {"H37.DN.001", KYSO_OK},
      {"a@b_c-d", KYSO_OK},
      {"", KYSO_INVALID_ARGUMENT},
      {"../etc/passwd", KYSO_INVALID_ARGUMENT},
      {"a/b", KYSO_INVALID_ARGUMENT},
      {"a b", KYSO_INVALID_ARGUMENT},
      {"nguyễn", KYSO_INVALID_ARGUMENT},
      {"0123456789012345678901234567890123456789012345678901234567890123", KYSO_OK},
      {"01234567890123456789012345678901234567890123456789012345678901234", KYSO_INVALID_ARGUMENT},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_err err = {0};
    kyso_status got = kysod__check_name("account", cases[i].in, &err);
    if (got != cases[i].want)
      fail_msg("check_name(\"%s\"): got %s, want %s (%s)", cases[i].in, kyso_strerror(got),
               kyso_strerror(cases[i].want), err.msg);
  }
}

static void test_text(void **state) {
  (void)state;
  static const struct { const char *in; kyso_status want; } cases[] = {
      {"Công văn số 123/UBND-VP", KYSO_OK},
      {"", KYSO_OK},
      {"tab\there", KYSO_INVALID_ARGUMENT},
      {"\xc0\xaf", KYSO_INVALID_ARGUMENT},         /* overlong '/' */
      {"\xed\xa0\x80", KYSO_INVALID_ARGUMENT},     /* surrogate */
      {"\xf4\x90\x80\x80", KYSO_INVALID_ARGUMENT}, /* past U+10FFFF */
      {"\xe1\xba", KYSO_INVALID_ARGUMENT},         /* truncated */
      {"\xf0\x9f\x93\x84 ok", KYSO_OK},             /* 4-byte sequence */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_err err = {0};
    kyso_status got = kysod__check_text("title", cases[i].in, 64, &err);
    if (got != cases[i].want)
      fail_msg("case %zu: got %s, want %s (%s)", i, kyso_strerror(got),
               kyso_strerror(cases[i].want), err.msg);
  }
  kyso_err err = {0};
  assert_int_equal(kysod__check_text("title", "abcdef", 5, &err), KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "longer than 5"));
}

static void test_labels_round_trip(void **state) {
  (void)state;
  char label[KYSO_MAX_LABEL + 1], copy[KYSO_MAX_LABEL + 1];
  kyso_err err = {0};
  Kyso__V1__KeyRef ref = KYSO__V1__KEY_REF__INIT, back = KYSO__V1__KEY_REF__INIT;

  ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  ref.account = "nguyen.van.a";
  assert_int_equal(kysod__key_label(&ref, label, sizeof(label), &err), KYSO_OK);
  assert_string_equal(label, "kyso/personal/nguyen.van.a");
  snprintf(copy, sizeof(copy), "%s", label);
  assert_true(kysod__label_to_ref(copy, &back));
  assert_int_equal(back.role, ref.role);
  assert_string_equal(back.account, "nguyen.van.a");

  ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
  ref.unit = "H37.DN.001";
  assert_int_equal(kysod__key_label(&ref, label, sizeof(label), &err), KYSO_OK);
  assert_string_equal(label, "kyso/seal/H37.DN.001");

  ref.unit = "";
  assert_int_equal(kysod__key_label(&ref, label, sizeof(label), &err), KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "key.unit"));
  ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_UNSPECIFIED;
  assert_int_equal(kysod__key_label(&ref, label, sizeof(label), &err), KYSO_INVALID_ARGUMENT);
  assert_int_equal(kysod__key_label(NULL, label, sizeof(label), &err), KYSO_INVALID_ARGUMENT);
  snprintf(copy, sizeof(copy), "someone-elses-key");
  assert_false(kysod__label_to_ref(copy, &back));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_labels_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
