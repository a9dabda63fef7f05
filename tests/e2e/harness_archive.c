/* kyso end-to-end harness: Archive calls (Put and Get streamed, Stat,
 * Scrub), deterministic documents, and what tests read from outside kysod:
 * /proc/PID/status, files in its data directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kyso/limits.h"
#include "kyso/util.h"

#define E2E_CHUNK KYSO_CHUNK_SIZE

int e2e_call_with(kyso_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                  ProtobufCMessage **resp, char *msg, size_t msg_size) {
  kyso_reply reply = {0};
  kyso_err err = {0};
  size_t n = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(n ? n : 1);
  int st = -1;
  if (resp) *resp = NULL;
  if (msg && msg_size) msg[0] = '\0';
  if (buf == NULL) {
    if (msg) snprintf(msg, msg_size, "out of memory");
    return -1;
  }
  protobuf_c_message_pack(req, buf);
  if (kyso_client_call(c, method, buf, n, timeout_ms, &reply, &err) != KYSO_OK) {
    if (msg) snprintf(msg, msg_size, "%s could not be made: %s", method, err.msg);
    goto out;
  }
  st = reply.grpc_status;
  if (msg) snprintf(msg, msg_size, "%s", reply.message);
  if (st == 0 && resp) {
    *resp = protobuf_c_message_unpack(resp_desc, NULL, reply.len, reply.data);
    if (*resp == NULL) {
      if (msg) snprintf(msg, msg_size, "%s: OK, but the response is not a %s", method,
                        resp_desc->name);
      st = -1;
    }
  }
out:
  free(buf);
  kyso_reply_free(&reply);
  return st;
}

int e2e_sign_with(kyso_client *c, const Kyso__V1__SignRequest *req, int64_t timeout_ms,
                  Kyso__V1__SignResponse **resp, char *msg, size_t msg_size) {
  return e2e_call_with(c, "/kyso.v1.Signer/Sign", &req->base,
                       &kyso__v1__sign_response__descriptor, timeout_ms,
                       (ProtobufCMessage **)resp, msg, msg_size);
}

int e2e_stat_with(kyso_client *c, const char *id, int include_signatures, int64_t timeout_ms,
                  Kyso__V1__DocumentInfo **info, char *msg, size_t msg_size) {
  Kyso__V1__StatRequest req = KYSO__V1__STAT_REQUEST__INIT;
  req.id = (char *)id;
  req.include_signatures = include_signatures;
  return e2e_call_with(c, "/kyso.v1.Archive/Stat", &req.base,
                       &kyso__v1__document_info__descriptor, timeout_ms,
                       (ProtobufCMessage **)info, msg, msg_size);
}

/* Packs m into *buf (grown as needed); the packed length. */
static size_t pack_into(const ProtobufCMessage *m, uint8_t **buf, size_t *cap) {
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n > *cap) {
    uint8_t *grown = realloc(*buf, n);
    if (grown == NULL) return SIZE_MAX;
    *buf = grown;
    *cap = n;
  }
  protobuf_c_message_pack(m, *buf);
  return n;
}

/* Ends a stream: the status into st/msg, unless a local failure came first. */
static int finish_stream(kyso_stream *s, int st, char *msg, size_t msg_size) {
  kyso_reply reply = {0};
  kyso_err err = {0};
  if (kyso_stream_finish(s, &reply, &err) != KYSO_OK) {
    if (msg) snprintf(msg, msg_size, "stream finish: %s", err.msg);
    return -1;
  }
  if (st == 0 || reply.grpc_status != 0) {
    if (msg) snprintf(msg, msg_size, "%s", reply.message);
    st = reply.grpc_status;
  }
  kyso_reply_free(&reply);
  return st;
}

int e2e_put_with(kyso_client *c, const Kyso__V1__PutHeader *hdr, const uint8_t *data, size_t len,
                 const char *path, int64_t timeout_ms, Kyso__V1__DocumentInfo **info, char *msg,
                 size_t msg_size) {
  kyso_stream *s = NULL;
  kyso_err err = {0};
  FILE *f = NULL;
  uint8_t *chunk = NULL, *packed = NULL, *resp = NULL;
  size_t cap = 0, resp_len = 0, off = 0;
  int end = 0, st = 0;
  if (info) *info = NULL;
  if (msg && msg_size) msg[0] = '\0';
  if (path != NULL && ((f = fopen(path, "rb")) == NULL || (chunk = malloc(E2E_CHUNK)) == NULL)) {
    if (msg) snprintf(msg, msg_size, "cannot read %s: %s", path, strerror(errno));
    if (f) fclose(f);
    return -1;
  }
  if (kyso_stream_open(c, "/kyso.v1.Archive/Put", timeout_ms, &s, &err) != KYSO_OK) {
    if (msg) snprintf(msg, msg_size, "Archive.Put could not be opened: %s", err.msg);
    st = -1;
    goto out;
  }
  for (int first = 1;; first = 0) {
    Kyso__V1__PutRequest m = KYSO__V1__PUT_REQUEST__INIT;
    size_t n;
    if (f != NULL) {
      n = fread(chunk, 1, E2E_CHUNK, f);
      m.chunk.data = chunk;
    } else {
      n = len - off < E2E_CHUNK ? len - off : E2E_CHUNK;
      m.chunk.data = (uint8_t *)data + off;
      off += n;
    }
    if (n == 0 && !first) break;
    m.chunk.len = n;
    if (first) m.header = (Kyso__V1__PutHeader *)hdr;
    size_t plen = pack_into(&m.base, &packed, &cap);
    if (plen == SIZE_MAX) {
      if (msg) snprintf(msg, msg_size, "out of memory");
      st = -1;
      goto out;
    }
    /* A refused send means the server ended the call: finish says why. */
    if (kyso_stream_send(s, packed, plen, &err) != KYSO_OK) break;
    if (n < E2E_CHUNK) break;
  }
  if (kyso_stream_close_send(s, &err) == KYSO_OK &&
      kyso_stream_recv(s, &resp, &resp_len, &end, &err) != KYSO_OK) {
    if (msg) snprintf(msg, msg_size, "Archive.Put response: %s", err.msg);
    st = -1;
  }
  st = finish_stream(s, st, msg, msg_size);
  s = NULL;
  if (st == 0 && (resp == NULL || end)) {
    if (msg) snprintf(msg, msg_size, "Archive.Put: OK without a DocumentInfo");
    st = -1;
  }
  if (st == 0 && info != NULL &&
      (*info = kyso__v1__document_info__unpack(NULL, resp_len, resp)) == NULL) {
    if (msg) snprintf(msg, msg_size, "Archive.Put: OK, but the response is not a DocumentInfo");
    st = -1;
  }
out:
  kyso_stream_cancel(s);
  if (f) fclose(f);
  free(chunk);
  free(packed);
  free(resp);
  return st;
}

void e2e_got_free(e2e_got *g) {
  if (g == NULL) return;
  kyso__v1__document_info__free_unpacked(g->info, NULL);
  free(g->data);
  memset(g, 0, sizeof(*g));
}

int e2e_get_with(kyso_client *c, const char *id, size_t keep_max, const char *out_path,
                 int64_t timeout_ms, e2e_got *g, char *msg, size_t msg_size) {
  kyso_stream *s = NULL;
  kyso_err err = {0};
  FILE *f = NULL;
  uint8_t buf[256], md[32];
  int st = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  memset(g, 0, sizeof(*g));
  if (msg && msg_size) msg[0] = '\0';
  Kyso__V1__GetRequest req = KYSO__V1__GET_REQUEST__INIT;
  req.id = (char *)id;
  size_t len = kyso__v1__get_request__get_packed_size(&req);
  if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 || len > sizeof(buf) ||
      (keep_max > 0 && (g->data = malloc(keep_max)) == NULL) ||
      (out_path != NULL && (f = fopen(out_path, "wb")) == NULL)) {
    if (msg) snprintf(msg, msg_size, "Archive.Get: cannot set up (id too long, no memory or %s)",
                      out_path ? out_path : "-");
    st = -1;
    goto out;
  }
  kyso__v1__get_request__pack(&req, buf);
  if (kyso_stream_open(c, "/kyso.v1.Archive/Get", timeout_ms, &s, &err) != KYSO_OK ||
      kyso_stream_send(s, buf, len, &err) != KYSO_OK ||
      kyso_stream_close_send(s, &err) != KYSO_OK) {
    if (s == NULL) {
      if (msg) snprintf(msg, msg_size, "Archive.Get could not be opened: %s", err.msg);
      st = -1;
      goto out;
    }
    /* The server may have answered already (e.g. NOT_FOUND): finish tells. */
  }
  for (size_t i = 0; s != NULL; i++) {
    uint8_t *data = NULL;
    size_t n = 0;
    int end = 0;
    if (kyso_stream_recv(s, &data, &n, &end, &err) != KYSO_OK) {
      if (msg) snprintf(msg, msg_size, "Archive.Get message %zu: %s", i, err.msg);
      st = -1;
      break;
    }
    if (end) break;
    Kyso__V1__GetResponse *m = kyso__v1__get_response__unpack(NULL, n, data);
    free(data);
    if (m == NULL || (i == 0) != (m->info != NULL)) {
      if (msg) snprintf(msg, msg_size, "Archive.Get message %zu: %s", i,
                        m ? "info must come in the first message only" : "not a GetResponse");
      kyso__v1__get_response__free_unpacked(m, NULL);
      st = -1;
      break;
    }
    if (m->info != NULL) {
      g->info = m->info;
      m->info = NULL; /* keep it: free_unpacked frees sub-messages by pointer */
    }
    if (m->chunk.len > 0) {
      g->chunks++;
      if (m->chunk.len > g->max_chunk) g->max_chunk = m->chunk.len;
      EVP_DigestUpdate(ctx, m->chunk.data, m->chunk.len);
      if (keep_max > 0) {
        if (g->size + m->chunk.len > keep_max) {
          if (msg) snprintf(msg, msg_size, "Archive.Get: more than %zu bytes came", keep_max);
          st = -1;
        } else {
          memcpy(g->data + g->size, m->chunk.data, m->chunk.len);
        }
      }
      if (f != NULL && fwrite(m->chunk.data, 1, m->chunk.len, f) != m->chunk.len) {
        if (msg) snprintf(msg, msg_size, "cannot write %s", out_path);
        st = -1;
      }
      g->size += m->chunk.len;
    }
    kyso__v1__get_response__free_unpacked(m, NULL);
    if (st != 0) break;
  }
  if (s != NULL) {
    if (st != 0) {
      kyso_stream_cancel(s);
    } else {
      st = finish_stream(s, st, msg, msg_size);
    }
    s = NULL;
  }
  unsigned mdlen = 0;
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  kyso_hex(md, 32, g->sha256);
out:
  if (f != NULL && fclose(f) != 0 && st == 0) {
    if (msg) snprintf(msg, msg_size, "cannot write %s", out_path);
    st = -1;
  }
  EVP_MD_CTX_free(ctx);
  return st;
}

void e2e_scrub_out_free(e2e_scrub_out *s) {
  if (s == NULL) return;
  free(s->problem_text);
  memset(s, 0, sizeof(*s));
}

int e2e_scrub(e2e *e, e2e_ident who, e2e_scrub_out *out, char *msg, size_t msg_size) {
  kyso_stream *s = NULL;
  kyso_err err = {0};
  uint8_t buf[16];
  size_t text_len = 0;
  int st = 0;
  memset(out, 0, sizeof(*out));
  if (e->clients[who] == NULL) E2E_FAIL("no client for identity %d (kysod not started?)", who);
  Kyso__V1__ScrubRequest req = KYSO__V1__SCRUB_REQUEST__INIT;
  size_t len = kyso__v1__scrub_request__pack(&req, buf);
  if (kyso_stream_open(e->clients[who], "/kyso.v1.Archive/Scrub", 300000, &s, &err) != KYSO_OK)
    E2E_FAIL("Archive.Scrub could not be opened: %s", err.msg);
  if (kyso_stream_send(s, buf, len, &err) == KYSO_OK) {
    if (kyso_stream_close_send(s, &err) != KYSO_OK) {
      /* finish says why */
    }
  }
  for (;;) {
    uint8_t *data = NULL;
    size_t n = 0;
    int end = 0;
    if (kyso_stream_recv(s, &data, &n, &end, &err) != KYSO_OK)
      E2E_FAIL("Archive.Scrub: receiving: %s", err.msg);
    if (end) break;
    Kyso__V1__ScrubProgress *m = kyso__v1__scrub_progress__unpack(NULL, n, data);
    free(data);
    if (m == NULL) E2E_FAIL("Archive.Scrub sent a message that is not a ScrubProgress");
    if (m->problem[0] != '\0') {
      size_t add = strlen(m->problem_kind) + strlen(m->problem_id) + strlen(m->problem) + 8;
      char *grown = realloc(out->problem_text, text_len + add);
      if (grown == NULL) E2E_FAIL("out of memory");
      out->problem_text = grown;
      text_len += (size_t)snprintf(grown + text_len, add, "%s %s: %s\n", m->problem_kind,
                                   m->problem_id, m->problem);
    }
    out->problems = m->problems;
    out->blobs = m->blobs_checked;
    out->bytes = m->bytes_checked;
    out->documents = m->documents_checked;
    out->signatures = m->signatures_checked;
    out->done = out->done || m->done;
    kyso__v1__scrub_progress__free_unpacked(m, NULL);
  }
  st = finish_stream(s, st, msg, msg_size);
  if (out->problem_text == NULL) out->problem_text = strdup("");
  return st;
}

/* xorshift64*: fast, and the same everywhere. */
void e2e_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t off) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  /* The stream is a function of the 8-byte word index, so pieces join up. */
  for (size_t i = 0; i < len; i++) {
    uint64_t pos = off + i;
    if (pos < 8) {
      buf[i] = (uint8_t)(seed >> (8 * pos));
      continue;
    }
    uint64_t w = x ^ (pos / 8) * 0xD1342543DE82EF95ull;
    w ^= w >> 31;
    w *= 0x2545F4914F6CDD1Dull;
    w ^= w >> 29;
    buf[i] = (uint8_t)(w >> (8 * (pos % 8)));
  }
}

long e2e_proc_kib(e2e *e, const char *field) {
  char path[64], line[256];
  long v = -1;
  size_t n = strlen(field);
  snprintf(path, sizeof(path), "/proc/%d/status", (int)e->pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) E2E_FAIL("cannot read %s: %s", path, strerror(errno));
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, field, n) == 0 && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
  fclose(f);
  if (v < 0) E2E_FAIL("%s has no %s line", path, field);
  return v;
}

int e2e_reset_peak_rss(e2e *e) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)e->pid);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  int rc = fd >= 0 && write(fd, "5", 1) == 1 ? 0 : -1;
  if (fd >= 0) close(fd);
  return rc;
}

int e2e_find_in_files(const char *dir, const char *suffix, const uint8_t *needle, size_t n,
                      char *found, size_t found_size, long *offset) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int hits = 0;
  size_t sl = strlen(suffix);
  if (d == NULL) return 0;
  while ((de = readdir(d)) != NULL) {
    size_t nl = strlen(de->d_name);
    if (nl < sl || strcmp(de->d_name + nl - sl, suffix) != 0) continue;
    char path[1024];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    uint8_t *data = e2e_read_file(path, &len);
    const uint8_t *at = data ? memmem(data, len, needle, n) : NULL;
    if (at != NULL) {
      if (hits == 0 && found) snprintf(found, found_size, "%s", path);
      if (hits == 0 && offset) *offset = (long)(at - data);
      hits++;
    }
    free(data);
  }
  closedir(d);
  return hits;
}

void e2e_flip_byte(const char *path, long offset) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  uint8_t b;
  if (fd < 0 || pread(fd, &b, 1, offset) != 1)
    E2E_FAIL("cannot read byte %ld of %s: %s", offset, path, strerror(errno));
  b ^= 0x20;
  if (pwrite(fd, &b, 1, offset) != 1 || fsync(fd) != 0)
    E2E_FAIL("cannot write byte %ld of %s: %s", offset, path, strerror(errno));
  close(fd);
}

uint64_t e2e_dir_bytes(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  uint64_t total = 0;
  if (d == NULL) return 0;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    if (lstat(path, &sb) != 0) continue;
    if (S_ISDIR(sb.st_mode))
      total += e2e_dir_bytes(path);
    else if (S_ISREG(sb.st_mode))
      total += (uint64_t)sb.st_size;
  }
  closedir(d);
  return total;
}
