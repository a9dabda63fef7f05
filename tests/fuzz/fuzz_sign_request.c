/* Fuzz target: a Sign request as it arrives off the wire — protobuf-c
 * unpacking, then every check kysod makes before a key is touched. */
#include <stddef.h>
#include <stdint.h>

#include "kysod.h"
#include "kyso/limits.h"
#include "kyso/v1/signer.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kyso_err err = {0};
  char label[KYSO_MAX_LABEL + 1];
  Kyso__V1__SignRequest *req = kyso__v1__sign_request__unpack(NULL, size, data);
  if (req == NULL) return 0;
  if (kysod__check_sign_request(req, KYSO_MAX_INLINE_DOCUMENT, &err) == KYSO_OK &&
      kysod__key_label(req->key, label, sizeof(label), &err) == KYSO_OK) {
    char copy[KYSO_MAX_LABEL + 1];
    Kyso__V1__KeyRef ref = KYSO__V1__KEY_REF__INIT;
    snprintf(copy, sizeof(copy), "%s", label);
    /* The label must map back to the same key reference. */
    if (!kysod__label_to_ref(copy, &ref)) __builtin_trap();
  }
  kyso__v1__sign_request__free_unpacked(req, NULL);
  return 0;
}
