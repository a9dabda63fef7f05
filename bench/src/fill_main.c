/* kyso-bench-fill — bulk state for the benchmarks, made offline with kyso's
 * own modules: a large archive (fill_archive.c) or many keys with their
 * certificates (fill_keys.c). */
#include <stdio.h>
#include <string.h>

#include "fill.h"
#include "tool.h"

static const char usage_text[] =
    "Usage: kyso-bench-fill archive --data-dir DIR --documents N [OPTIONS]\n"
    "       kyso-bench-fill keys --config FILE --pki DIR --keys N --alg rsa-2048|ec-p256\n"
    "                            [OPTIONS]\n"
    "\n"
    "Fills a node's state for benchmarks, with kysod stopped:\n"
    "  archive   records N distinct documents with their metadata in DIR/archive,\n"
    "            through the archive module and the commands kysod applies\n"
    "  keys      imports N personal keys into kysod's HSM token and stores a\n"
    "            certificate for each, issued by a test PKI's sub-CA\n"
    "\n"
    "kyso-bench-fill COMMAND --help tells more.\n";

int main(int argc, char **argv) {
  tool_name = "kyso-bench-fill";
  if (argc < 2) {
    fputs(usage_text, stderr);
    return 2;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (strcmp(argv[1], "archive") == 0) {
    tool_name = "kyso-bench-fill archive";
    return fill_archive_main(argc - 1, argv + 1);
  }
  if (strcmp(argv[1], "keys") == 0) {
    tool_name = "kyso-bench-fill keys";
    return fill_keys_main(argc - 1, argv + 1);
  }
  fprintf(stderr, "kyso-bench-fill: unknown command '%s'; it is archive or keys (see "
          "kyso-bench-fill --help)\n", argv[1]);
  return 2;
}
