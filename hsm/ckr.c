/* kyso — PKCS#11 return values: their names, and the kyso_status each maps to. */
#include <stdarg.h>
#include <stdio.h>

#include "hsm_internal.h"

#define HSM__RV_MAP(X)                                                        \
  X(CKR_OK) X(CKR_CANCEL) X(CKR_HOST_MEMORY) X(CKR_SLOT_ID_INVALID)           \
  X(CKR_GENERAL_ERROR) X(CKR_FUNCTION_FAILED) X(CKR_ARGUMENTS_BAD)            \
  X(CKR_CANT_LOCK) X(CKR_ATTRIBUTE_READ_ONLY) X(CKR_ATTRIBUTE_SENSITIVE)      \
  X(CKR_ATTRIBUTE_TYPE_INVALID) X(CKR_ATTRIBUTE_VALUE_INVALID)                \
  X(CKR_ACTION_PROHIBITED) X(CKR_DATA_INVALID) X(CKR_DATA_LEN_RANGE)          \
  X(CKR_DEVICE_ERROR) X(CKR_DEVICE_MEMORY) X(CKR_DEVICE_REMOVED)              \
  X(CKR_FUNCTION_CANCELED) X(CKR_FUNCTION_NOT_SUPPORTED)                      \
  X(CKR_KEY_HANDLE_INVALID) X(CKR_KEY_SIZE_RANGE) X(CKR_KEY_TYPE_INCONSISTENT) \
  X(CKR_KEY_FUNCTION_NOT_PERMITTED) X(CKR_KEY_NOT_WRAPPABLE)                  \
  X(CKR_KEY_UNEXTRACTABLE) X(CKR_MECHANISM_INVALID)                           \
  X(CKR_MECHANISM_PARAM_INVALID) X(CKR_OBJECT_HANDLE_INVALID)                 \
  X(CKR_OPERATION_ACTIVE) X(CKR_OPERATION_NOT_INITIALIZED)                    \
  X(CKR_PIN_INCORRECT) X(CKR_PIN_INVALID) X(CKR_PIN_LEN_RANGE)                \
  X(CKR_PIN_EXPIRED) X(CKR_PIN_LOCKED) X(CKR_SESSION_CLOSED)                  \
  X(CKR_SESSION_COUNT) X(CKR_SESSION_HANDLE_INVALID)                          \
  X(CKR_SESSION_READ_ONLY) X(CKR_SESSION_EXISTS)                              \
  X(CKR_SESSION_READ_WRITE_SO_EXISTS) X(CKR_SIGNATURE_INVALID)                \
  X(CKR_SIGNATURE_LEN_RANGE) X(CKR_TEMPLATE_INCOMPLETE)                       \
  X(CKR_TEMPLATE_INCONSISTENT) X(CKR_TOKEN_NOT_PRESENT)                       \
  X(CKR_TOKEN_NOT_RECOGNIZED) X(CKR_TOKEN_WRITE_PROTECTED)                    \
  X(CKR_USER_ALREADY_LOGGED_IN) X(CKR_USER_NOT_LOGGED_IN)                     \
  X(CKR_USER_PIN_NOT_INITIALIZED) X(CKR_USER_TYPE_INVALID)                    \
  X(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) X(CKR_WRAPPING_KEY_HANDLE_INVALID)    \
  X(CKR_WRAPPING_KEY_TYPE_INCONSISTENT) X(CKR_DOMAIN_PARAMS_INVALID)          \
  X(CKR_CURVE_NOT_SUPPORTED) X(CKR_BUFFER_TOO_SMALL)                          \
  X(CKR_CRYPTOKI_NOT_INITIALIZED) X(CKR_CRYPTOKI_ALREADY_INITIALIZED)         \
  X(CKR_FUNCTION_REJECTED) X(CKR_WRAPPED_KEY_INVALID)                         \
  X(CKR_WRAPPED_KEY_LEN_RANGE) X(CKR_WRAPPING_KEY_SIZE_RANGE)                 \
  X(CKR_UNWRAPPING_KEY_HANDLE_INVALID) X(CKR_UNWRAPPING_KEY_SIZE_RANGE)       \
  X(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT) X(CKR_ENCRYPTED_DATA_INVALID)       \
  X(CKR_ENCRYPTED_DATA_LEN_RANGE)

const char *hsm__rv_name(CK_RV rv) {
  switch (rv) {
#define HSM__RV_CASE(name) \
  case name:               \
    return #name;
    HSM__RV_MAP(HSM__RV_CASE)
#undef HSM__RV_CASE
    default:
      return rv & CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_(unknown)";
  }
}

/* A token unplugged or restarted shows up as any of these; after C_Finalize
 * + C_Initialize the session and object handles differ, so stale handles mean
 * the same thing. Measured with p11-kit 0.24.1: when the p11-kit-remote
 * serving our connection dies, p11-kit-client.so answers every later call
 * with CKR_DEVICE_ERROR (not CKR_DEVICE_REMOVED) until C_Finalize +
 * C_Initialize, which reconnects. */
int hsm__rv_gone(CK_RV rv) {
  switch (rv) {
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
      return 1;
    default:
      return 0;
  }
}

static kyso_status rv_status(CK_RV rv) {
  if (hsm__rv_gone(rv)) return KYSO_UNAVAILABLE;
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
      return KYSO_UNAUTHENTICATED;
    case CKR_HOST_MEMORY:
    case CKR_DEVICE_MEMORY:
    case CKR_SESSION_COUNT:
      return KYSO_RESOURCE_EXHAUSTED;
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_TEMPLATE_INCOMPLETE:
    case CKR_ATTRIBUTE_VALUE_INVALID:
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_KEY_SIZE_RANGE:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_SESSION_READ_ONLY:
      return KYSO_FAILED_PRECONDITION;
    default:
      return KYSO_INTERNAL;
  }
}

kyso_status hsm__fail_rv(kyso_err *err, CK_RV rv, const char *token,
                         const char *what_fmt, ...) {
  char what[KYSO_ERR_MSG_MAX / 2];
  va_list ap;
  va_start(ap, what_fmt);
  vsnprintf(what, sizeof(what), what_fmt, ap);
  va_end(ap);
  if (hsm__rv_gone(rv))
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "%s: HSM token '%s' went away (%s); kysod will reinitialise it",
                     what, token, hsm__rv_name(rv));
  return kyso_fail(err, rv_status(rv), "%s: %s (0x%lx)", what, hsm__rv_name(rv),
                   (unsigned long)rv);
}
