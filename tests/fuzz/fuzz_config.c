/* Fuzz target: kysod's configuration parser (libinih + our validation). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kyso/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[] = "/tmp/kyso-fuzz-config-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  if (write(fd, data, size) == (ssize_t)size) {
    kyso_config cfg;
    kyso_err err = {0};
    if (kyso_config_load(path, &cfg, &err) == KYSO_OK) {
      kyso_status st = kyso_config_check_server(&cfg, &err);
      (void)st;
    }
    kyso_config_free(&cfg);
  }
  close(fd);
  unlink(path);
  return 0;
}
