/* kyso CLI — CSV files for the bulk import, parsed by libcsv. */
#include "csv_table.h"

#include <csv.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A field longer than this is not a name, a code or a fingerprint. */
#define CSV_FIELD_MAX 1024

struct csv_table {
  size_t columns, rows, cap;
  char **fields;  /* rows * columns, each malloc()ed */
  size_t *lines;  /* per row */
};

typedef struct parse_state {
  csv_table *t;
  const char *path;
  const char *const *header;
  size_t max_rows;
  size_t col;       /* fields seen in the current record */
  size_t record;    /* records seen, the header included */
  char **row;       /* the current record's fields (columns of them) */
  kyso_status st;
  kyso_err *err;
} parse_state;

static void fail(parse_state *s, const char *fmt, ...) KYSO_PRINTF(2, 3);
static void fail(parse_state *s, const char *fmt, ...) {
  if (s->st != KYSO_OK) return;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  s->st = kyso_fail(s->err, KYSO_INVALID_ARGUMENT, "%s, record %zu: %s", s->path, s->record + 1,
                    msg);
}

static void on_field(void *data, size_t len, void *arg) {
  parse_state *s = arg;
  if (s->st != KYSO_OK) return;
  if (s->col >= s->t->columns) {
    fail(s, "more fields than the %zu columns", s->t->columns);
    s->col++;
    return;
  }
  if (len > CSV_FIELD_MAX) {
    fail(s, "a field longer than %d bytes", CSV_FIELD_MAX);
    return;
  }
  char *f = malloc(len + 1);
  if (f == NULL) {
    s->st = kyso_fail(s->err, KYSO_RESOURCE_EXHAUSTED, "out of memory reading %s", s->path);
    return;
  }
  memcpy(f, data, len);
  f[len] = '\0';
  if (memchr(f, '\0', len) != NULL) {
    free(f);
    fail(s, "a field holds a NUL byte");
    return;
  }
  s->row[s->col++] = f;
}

static void clear_row(parse_state *s) {
  for (size_t i = 0; i < s->t->columns; i++) {
    free(s->row[i]);
    s->row[i] = NULL;
  }
  s->col = 0;
}

static void on_record(int end, void *arg) {
  parse_state *s = arg;
  csv_table *t = s->t;
  (void)end;
  if (s->st == KYSO_OK && s->col != t->columns)
    fail(s, "%zu fields, want %zu", s->col, t->columns);
  if (s->st != KYSO_OK) {
    clear_row(s);
    return;
  }
  if (s->record == 0) {
    /* A spreadsheet's UTF-8 byte order mark is not part of the first name. */
    if (strncmp(s->row[0], "\xEF\xBB\xBF", 3) == 0)
      memmove(s->row[0], s->row[0] + 3, strlen(s->row[0] + 3) + 1);
    for (size_t i = 0; i < t->columns && s->st == KYSO_OK; i++)
      if (strcmp(s->row[i], s->header[i]) != 0)
        fail(s, "column %zu of the header is '%s', want '%s'", i + 1, s->row[i], s->header[i]);
    clear_row(s);
    s->record++;
    return;
  }
  if (t->rows >= s->max_rows) {
    fail(s, "more than %zu rows", s->max_rows);
    clear_row(s);
    return;
  }
  if (t->rows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    char **f = realloc(t->fields, cap * t->columns * sizeof(*f));
    if (f != NULL) t->fields = f;
    size_t *l = f != NULL ? realloc(t->lines, cap * sizeof(*l)) : NULL;
    if (l != NULL) t->lines = l;
    if (f == NULL || l == NULL) {
      s->st = kyso_fail(s->err, KYSO_RESOURCE_EXHAUSTED, "out of memory reading %s", s->path);
      clear_row(s);
      return;
    }
    t->cap = cap;
  }
  memcpy(&t->fields[t->rows * t->columns], s->row, t->columns * sizeof(char *));
  memset(s->row, 0, t->columns * sizeof(char *));
  t->lines[t->rows++] = s->record + 1;
  s->col = 0;
  s->record++;
}

kyso_status csv_table_load(const char *path, const char *const *header, size_t columns,
                           size_t max_rows, csv_table **out, kyso_err *err) {
  struct csv_parser p;
  int parser = 0;
  char buf[65536];
  FILE *f = NULL;
  parse_state s = {.path = path, .header = header, .max_rows = max_rows, .err = err};
  *out = NULL;
  s.t = calloc(1, sizeof(*s.t));
  s.row = calloc(columns, sizeof(char *));
  if (s.t == NULL || s.row == NULL) {
    s.st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  s.t->columns = columns;
  if ((f = fopen(path, "rb")) == NULL) {
    s.st = kyso_fail(err, errno == ENOENT ? KYSO_NOT_FOUND : KYSO_FAILED_PRECONDITION,
                     "cannot open %s: %s", path, strerror(errno));
    goto out;
  }
  if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
    s.st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot set up the CSV parser");
    goto out;
  }
  parser = 1;
  size_t n;
  while (s.st == KYSO_OK && (n = fread(buf, 1, sizeof(buf), f)) > 0)
    if (csv_parse(&p, buf, n, on_field, on_record, &s) != n && s.st == KYSO_OK)
      s.st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s, near record %zu: %s", path,
                       s.record + 1, csv_strerror(csv_error(&p)));
  if (s.st == KYSO_OK && ferror(f))
    s.st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot read %s", path);
  if (s.st == KYSO_OK && csv_fini(&p, on_field, on_record, &s) != 0 && s.st == KYSO_OK)
    s.st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s ends inside a quoted field", path);
  if (s.st == KYSO_OK && s.record == 0)
    s.st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s is empty: it needs its header row", path);
out:
  if (parser) csv_free(&p);
  if (f != NULL) fclose(f);
  if (s.row != NULL) clear_row(&s);
  free(s.row);
  if (s.st == KYSO_OK)
    *out = s.t;
  else
    csv_table_free(s.t);
  return s.st;
}

void csv_table_free(csv_table *t) {
  if (t == NULL) return;
  for (size_t i = 0; i < t->rows * t->columns; i++) free(t->fields[i]);
  free(t->fields);
  free(t->lines);
  free(t);
}

size_t csv_table_rows(const csv_table *t) { return t->rows; }

const char *csv_table_field(const csv_table *t, size_t row, size_t col) {
  return t->fields[row * t->columns + col];
}

size_t csv_table_line(const csv_table *t, size_t row) { return t->lines[row]; }
