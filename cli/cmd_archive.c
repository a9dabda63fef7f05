/* kyso archive put | get | stat | ls | scrub | backup. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "kyso/limits.h"
#include "kyso/util.h"
#include "kyso/v1/archive.pb-c.h"

static const char archive_help[] =
    "Usage: kyso archive COMMAND ...\n"
    "\n"
    "  put FILE [--unit CODE --number N --title T --date YYYY-MM-DD --media-type M\n"
    "            --type T --account NAME --request-id ID]\n"
    "                         upload a document (any size up to the node's limit);\n"
    "                         prints its archive id (SHA-256)\n"
    "  get ID [--out FILE]    download a document (re-checked against its id)\n"
    "  stat ID [--signatures DIR]\n"
    "                         show a document's record and signature chain;\n"
    "                         with --signatures, write each signature to DIR\n"
    "  ls (--unit CODE | --account NAME) [--from DATE] [--to DATE] [--number N]\n"
    "                         list documents, all pages\n"
    "  scrub                  re-hash every stored document and check every record\n"
    "  backup DIR             consistent checkpoint of the node's store into DIR\n"
    "                         (a path on the node; see README, Backup and restore)\n";

enum { A_UNIT = 1, A_NUMBER, A_TITLE, A_DATE, A_MEDIA, A_TYPE, A_ACCOUNT, A_REQID, A_OUT,
       A_FROM, A_TO, A_SIGS };

static const struct option archive_longopts[] = {
    {"unit", required_argument, NULL, A_UNIT},     {"number", required_argument, NULL, A_NUMBER},
    {"title", required_argument, NULL, A_TITLE},   {"date", required_argument, NULL, A_DATE},
    {"media-type", required_argument, NULL, A_MEDIA}, {"type", required_argument, NULL, A_TYPE},
    {"account", required_argument, NULL, A_ACCOUNT}, {"request-id", required_argument, NULL, A_REQID},
    {"out", required_argument, NULL, A_OUT},       {"from", required_argument, NULL, A_FROM},
    {"to", required_argument, NULL, A_TO},         {"signatures", required_argument, NULL, A_SIGS},
    {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0}};

typedef struct archive_opts_cli {
  Kyso__V1__DocumentMetadata meta;
  const char *account, *request_id, *out, *from, *to, *sigs;
} archive_opts_cli;

static int parse(int argc, char **argv, archive_opts_cli *o) {
  int opt;
  memset(o, 0, sizeof(*o));
  kyso__v1__document_metadata__init(&o->meta);
  while ((opt = getopt_long(argc, argv, "h", archive_longopts, NULL)) != -1) {
    switch (opt) {
      case A_UNIT: o->meta.unit = optarg; break;
      case A_NUMBER: o->meta.number_notation = optarg; break;
      case A_TITLE: o->meta.title = optarg; break;
      case A_DATE: o->meta.issue_date = optarg; break;
      case A_MEDIA: o->meta.media_type = optarg; break;
      case A_TYPE: o->meta.document_type = optarg; break;
      case A_ACCOUNT: o->account = optarg; break;
      case A_REQID: o->request_id = optarg; break;
      case A_OUT: o->out = optarg; break;
      case A_FROM: o->from = optarg; break;
      case A_TO: o->to = optarg; break;
      case A_SIGS: o->sigs = optarg; break;
      case 'h': fputs(archive_help, stdout); return 0;
      default: fputs(archive_help, stderr); return 2;
    }
  }
  return -1;
}

static void print_info(const Kyso__V1__DocumentInfo *d) {
  printf("%s  %10llu bytes  %s", d->id, (unsigned long long)d->size, d->created);
  if (d->metadata && d->metadata->unit[0]) printf("  unit %s", d->metadata->unit);
  if (d->metadata && d->metadata->number_notation[0]) printf("  no. %s", d->metadata->number_notation);
  if (d->metadata && d->metadata->issue_date[0]) printf("  dated %s", d->metadata->issue_date);
  printf("  %zu signature(s)\n", d->n_signatures);
}

/* Reads FILE and streams it in 1 MiB chunks; memory stays at one chunk. */
static int cmd_put(cli *c, const char *path, archive_opts_cli *o) {
  FILE *f = fopen(path, "rb");
  kyso_err err = {0};
  kyso_stream *s = NULL;
  kyso_reply reply = {0};
  uint8_t *chunk = malloc(KYSO_CHUNK_SIZE), *msg = NULL, *resp = NULL;
  size_t resp_len = 0;
  int rc = 1, end = 0;
  struct stat sb;
  if (f == NULL || chunk == NULL) {
    rc = cli_fail("cannot read '%s'", path);
    goto out;
  }
  fstat(fileno(f), &sb);
  /* A progress line for large uploads, when someone is watching. */
  int progress = isatty(STDERR_FILENO) && sb.st_size > 8 * KYSO_CHUNK_SIZE;
  if (cli_connect(c) != 0) goto out;
  if (kyso_stream_open(c->client, "/kyso.v1.Archive/Put", c->timeout_ms, &s, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  hdr.metadata = &o->meta;
  hdr.account = (char *)(o->account ? o->account : "");
  hdr.request_id = (char *)(o->request_id ? o->request_id : "");
  uint64_t sent = 0;
  for (int first = 1;; first = 0) {
    size_t n = fread(chunk, 1, KYSO_CHUNK_SIZE, f);
    if (n == 0 && !first) break;
    Kyso__V1__PutRequest m = KYSO__V1__PUT_REQUEST__INIT;
    if (first) m.header = &hdr;
    m.chunk.data = chunk;
    m.chunk.len = n;
    size_t len = kyso__v1__put_request__get_packed_size(&m);
    uint8_t *grown = realloc(msg, len ? len : 1);
    if (grown == NULL) goto out;
    msg = grown;
    kyso__v1__put_request__pack(&m, msg);
    if (kyso_stream_send(s, msg, len, &err) != KYSO_OK) break; /* finish says why */
    sent += n;
    if (progress)
      fprintf(stderr, "\rkyso: uploading %s: %3d%%", path,
              (int)(100 * sent / (uint64_t)(sb.st_size ? sb.st_size : 1)));
    if (n < KYSO_CHUNK_SIZE) break;
  }
  if (progress) fputc('\n', stderr);
  /* A failed receive shows in the status kyso_stream_finish reports. */
  if (kyso_stream_close_send(s, &err) == KYSO_OK &&
      kyso_stream_recv(s, &resp, &resp_len, &end, &err) != KYSO_OK)
    resp_len = 0;
  kyso_status fst = kyso_stream_finish(s, &reply, &err);
  s = NULL;
  if (fst != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  if (reply.grpc_status != 0) {
    rc = cli_fail("Archive.Put failed (gRPC status %d): %s", reply.grpc_status, reply.message);
    goto out;
  }
  Kyso__V1__DocumentInfo *info = kyso__v1__document_info__unpack(NULL, resp_len, resp);
  if (info == NULL) {
    rc = cli_fail("the node sent a response that does not parse");
    goto out;
  }
  print_info(info);
  kyso__v1__document_info__free_unpacked(info, NULL);
  rc = 0;
out:
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  if (f) fclose(f);
  free(chunk);
  free(msg);
  free(resp);
  return rc;
}

static int cmd_get(cli *c, const char *id, archive_opts_cli *o) {
  kyso_err err = {0};
  kyso_stream *s = NULL;
  kyso_reply reply = {0};
  FILE *f = NULL;
  int rc = 1;
  uint64_t got = 0, want = 0;
  if (cli_connect(c) != 0) return 1;
  Kyso__V1__GetRequest req = KYSO__V1__GET_REQUEST__INIT;
  req.id = (char *)id;
  uint8_t buf[256];
  size_t len = kyso__v1__get_request__get_packed_size(&req);
  if (len > sizeof(buf)) return cli_fail("id too long");
  kyso__v1__get_request__pack(&req, buf);
  if (kyso_stream_open(c->client, "/kyso.v1.Archive/Get", c->timeout_ms, &s, &err) != KYSO_OK ||
      kyso_stream_send(s, buf, len, &err) != KYSO_OK ||
      kyso_stream_close_send(s, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  const char *path = o->out ? o->out : id;
  for (;;) {
    uint8_t *data = NULL;
    size_t n = 0;
    int end = 0;
    if (kyso_stream_recv(s, &data, &n, &end, &err) != KYSO_OK || end) break;
    Kyso__V1__GetResponse *m = kyso__v1__get_response__unpack(NULL, n, data);
    free(data);
    if (m == NULL) break;
    if (m->info) want = m->info->size;
    if (f == NULL && (f = fopen(path, "wb")) == NULL) {
      kyso__v1__get_response__free_unpacked(m, NULL);
      rc = cli_fail("cannot create '%s'", path);
      goto out;
    }
    if (m->chunk.len) fwrite(m->chunk.data, 1, m->chunk.len, f);
    got += m->chunk.len;
    kyso__v1__get_response__free_unpacked(m, NULL);
  }
  kyso_status fst = kyso_stream_finish(s, &reply, &err);
  s = NULL;
  if (fst != KYSO_OK || reply.grpc_status != 0 || got != want) {
    rc = cli_fail("Archive.Get %s failed (gRPC status %d): %s", id, reply.grpc_status,
                  fst != KYSO_OK ? err.msg : reply.message);
    if (f) {
      fclose(f);
      f = NULL;
      remove(path); /* never leave a partial document behind */
    }
    goto out;
  }
  printf("wrote %s (%llu bytes, checked against its id)\n", path, (unsigned long long)got);
  rc = 0;
out:
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  if (f && fclose(f) != 0) rc = cli_fail("cannot write '%s'", path);
  return rc;
}

static int cmd_stat(cli *c, const char *id, archive_opts_cli *o) {
  Kyso__V1__StatRequest req = KYSO__V1__STAT_REQUEST__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  req.id = (char *)id;
  req.include_signatures = o->sigs != NULL;
  int rc = cli_call(c, "/kyso.v1.Archive/Stat", &req.base, &kyso__v1__document_info__descriptor,
                    (ProtobufCMessage **)&info);
  if (rc) return rc;
  print_info(info);
  const Kyso__V1__DocumentMetadata *m = info->metadata;
  if (m && m->title[0]) printf("  title: %s\n", m->title);
  if (info->account[0]) printf("  account: %s\n", info->account);
  for (size_t i = 0; i < info->n_signatures; i++) {
    const Kyso__V1__SignatureInfo *s = info->signatures[i];
    printf("  signature %u: %s by %s (key %s) at %s\n", s->order, s->signature_id,
           s->certificate_subject, s->key_label, s->signing_time);
    if (s->timestamp_time[0])
      printf("    time-stamp: genTime %s, serial %s, TSA %s\n", s->timestamp_time,
             s->timestamp_serial, s->timestamp_tsa);
    if (o->sigs) {
      char path[KYSO_PATH_MAX];
      snprintf(path, sizeof(path), "%s/%s.%u.p7s", o->sigs, id, s->order);
      FILE *f = fopen(path, "wb");
      if (f == NULL || fwrite(s->signature.data, 1, s->signature.len, f) != s->signature.len) {
        if (f) fclose(f);
        rc = cli_fail("cannot write '%s'", path);
        break;
      }
      fclose(f);
      printf("    -> %s\n", path);
    }
  }
  kyso__v1__document_info__free_unpacked(info, NULL);
  return rc;
}

static int cmd_ls(cli *c, archive_opts_cli *o) {
  Kyso__V1__ListRequest req = KYSO__V1__LIST_REQUEST__INIT;
  char token[513] = "";
  size_t total = 0;
  if (o->meta.unit && o->meta.unit[0]) {
    req.by_case = KYSO__V1__LIST_REQUEST__BY_UNIT;
    req.unit = o->meta.unit;
  } else if (o->account) {
    req.by_case = KYSO__V1__LIST_REQUEST__BY_ACCOUNT;
    req.account = (char *)o->account;
  } else {
    return cli_fail("give --unit CODE or --account NAME; see `kyso archive --help`");
  }
  req.from_date = (char *)(o->from ? o->from : "");
  req.to_date = (char *)(o->to ? o->to : "");
  req.number_notation = o->meta.number_notation;
  req.page_size = 500;
  do {
    Kyso__V1__ListResponse *resp = NULL;
    req.page_token = token;
    int rc = cli_call(c, "/kyso.v1.Archive/List", &req.base,
                      &kyso__v1__list_response__descriptor, (ProtobufCMessage **)&resp);
    if (rc) return rc;
    for (size_t i = 0; i < resp->n_documents; i++) print_info(resp->documents[i]);
    total += resp->n_documents;
    snprintf(token, sizeof(token), "%s", resp->next_page_token);
    kyso__v1__list_response__free_unpacked(resp, NULL);
  } while (token[0]);
  fprintf(stderr, "kyso: %zu document(s)\n", total);
  return 0;
}

static int cmd_scrub(cli *c) {
  kyso_err err = {0};
  kyso_stream *s = NULL;
  kyso_reply reply = {0};
  uint64_t problems = 0;
  int done = 0, rc = 1;
  if (cli_connect(c) != 0) return 1;
  Kyso__V1__ScrubRequest req = KYSO__V1__SCRUB_REQUEST__INIT;
  uint8_t buf[16];
  size_t len = kyso__v1__scrub_request__pack(&req, buf);
  if (kyso_stream_open(c->client, "/kyso.v1.Archive/Scrub", c->timeout_ms, &s, &err) != KYSO_OK ||
      kyso_stream_send(s, buf, len, &err) != KYSO_OK ||
      kyso_stream_close_send(s, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  for (;;) {
    uint8_t *data = NULL;
    size_t n = 0;
    int end = 0;
    if (kyso_stream_recv(s, &data, &n, &end, &err) != KYSO_OK || end) break;
    Kyso__V1__ScrubProgress *m = kyso__v1__scrub_progress__unpack(NULL, n, data);
    free(data);
    if (m == NULL) break;
    int tty = isatty(STDERR_FILENO);
    if (m->problem[0]) {
      if (tty) fputc('\n', stderr);
      printf("PROBLEM %s %s: %s\n", m->problem_kind, m->problem_id, m->problem);
    }
    fprintf(stderr, "%skyso: scrub: %llu blobs (%llu MiB), %llu documents, %llu signatures, "
            "%llu problem(s)%s", tty ? "\r" : "", (unsigned long long)m->blobs_checked,
            (unsigned long long)(m->bytes_checked >> 20), (unsigned long long)m->documents_checked,
            (unsigned long long)m->signatures_checked, (unsigned long long)m->problems,
            tty ? "" : "\n");
    problems = m->problems;
    done = m->done;
    kyso__v1__scrub_progress__free_unpacked(m, NULL);
  }
  if (isatty(STDERR_FILENO)) fputc('\n', stderr);
  kyso_status fst = kyso_stream_finish(s, &reply, &err);
  s = NULL;
  if (fst != KYSO_OK || reply.grpc_status != 0 || !done) {
    rc = cli_fail("scrub did not finish (gRPC status %d): %s", reply.grpc_status,
                  fst != KYSO_OK ? err.msg : reply.message);
    goto out;
  }
  printf("scrub finished: %llu problem(s)\n", (unsigned long long)problems);
  rc = problems ? 1 : 0;
out:
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  return rc;
}

static int cmd_backup(cli *c, const char *dir) {
  Kyso__V1__BackupRequest req = KYSO__V1__BACKUP_REQUEST__INIT;
  Kyso__V1__BackupResponse *resp = NULL;
  req.directory = (char *)dir;
  int rc = cli_call(c, "/kyso.v1.Archive/Backup", &req.base,
                    &kyso__v1__backup_response__descriptor, (ProtobufCMessage **)&resp);
  if (rc) return rc;
  printf("checkpoint written to %s on the node (%llu bytes)\n", resp->directory,
         (unsigned long long)resp->bytes);
  kyso__v1__backup_response__free_unpacked(resp, NULL);
  return 0;
}

int cli_archive(cli *c, int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fputs(archive_help, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *sub = argv[1];
  archive_opts_cli o;
  int rc = parse(argc - 1, argv + 1, &o);
  if (rc >= 0) return rc;
  int first = optind + 1; /* positional arguments, relative to argv */
  int npos = argc - first;
  const char *arg = npos > 0 ? argv[first] : NULL;
  if (strcmp(sub, "put") == 0 && npos == 1) return cmd_put(c, arg, &o);
  if (strcmp(sub, "get") == 0 && npos == 1) return cmd_get(c, arg, &o);
  if (strcmp(sub, "stat") == 0 && npos == 1) return cmd_stat(c, arg, &o);
  if (strcmp(sub, "ls") == 0 && npos == 0) return cmd_ls(c, &o);
  if (strcmp(sub, "scrub") == 0 && npos == 0) return cmd_scrub(c);
  if (strcmp(sub, "backup") == 0 && npos == 1) return cmd_backup(c, arg);
  fputs(archive_help, stderr);
  return 2;
}
