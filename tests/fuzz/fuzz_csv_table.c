/* Fuzz target: the bulk import's CSV reader (libcsv + our checks), on the
 * accounts file's header; what it accepts must read back consistently. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csv_table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const header[] = {"id", "unit", "name", "roles", "cert_sha256", "san",
                                       "issuer"};
  char path[] = "/tmp/kyso-fuzz-csv-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  if (write(fd, data, size) == (ssize_t)size) {
    csv_table *t = NULL;
    kyso_err err = {0};
    if (csv_table_load(path, header, 7, 1000, &t, &err) == KYSO_OK) {
      for (size_t r = 0; r < csv_table_rows(t); r++) {
        if (csv_table_line(t, r) < 2) abort(); /* a data row follows the header */
        for (size_t c = 0; c < 7; c++)
          if (strlen(csv_table_field(t, r, c)) > 1024) abort();
      }
    } else if (err.msg[0] == '\0') {
      abort(); /* a refusal always says why */
    }
    csv_table_free(t);
  }
  close(fd);
  unlink(path);
  return 0;
}
