/* kyso CLI — a CSV file read whole into rows of fields (libcsv, RFC 4180
 * quoting), for the bulk import. The first row must be the expected header. */
#ifndef KYSO_CLI_CSV_TABLE_H
#define KYSO_CLI_CSV_TABLE_H

#include <stddef.h>

#include "kyso/status.h"

typedef struct csv_table csv_table;

/* Reads path; its header row must hold exactly the columns named in
 * header (in that order). Each data row must have as many fields. At most
 * max_rows data rows. A bad file fails with INVALID_ARGUMENT naming the
 * file and line. */
kyso_status csv_table_load(const char *path, const char *const *header, size_t columns,
                           size_t max_rows, csv_table **out, kyso_err *err) KYSO_MUST_CHECK;
void csv_table_free(csv_table *t);
size_t csv_table_rows(const csv_table *t);
/* Field col of data row (0-based), NUL-terminated; "" for an empty field. */
const char *csv_table_field(const csv_table *t, size_t row, size_t col);
/* The file line a data row started on, for messages. */
size_t csv_table_line(const csv_table *t, size_t row);

#endif
