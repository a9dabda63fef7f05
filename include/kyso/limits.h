/* kyso — every size and count limit in one place, each with its reason. */
#ifndef KYSO_LIMITS_H
#define KYSO_LIMITS_H

/* gRPC message cap (both directions). gRPC's default; larger documents go by
 * archive id (streamed Put) rather than in one message. */
#define KYSO_MAX_MESSAGE (4 * 1024 * 1024)

/* A document signed inline must fit in one message with its metadata. */
#define KYSO_MAX_INLINE_DOCUMENT (KYSO_MAX_MESSAGE - 64 * 1024)

/* Archived documents: a scanned dossier is tens of MiB; 100 MiB covers the
 * largest the DMS accepts. Configurable per node (max_document). */
#define KYSO_MAX_DOCUMENT (100ULL * 1024 * 1024)

/* Streams and blob chunks: 1 MiB keeps one call's memory small and a
 * chunk well under the gRPC message cap. */
#define KYSO_CHUNK_SIZE (1024 * 1024)

/* Archive listing page. */
#define KYSO_MAX_PAGE 1000

/* Account, unit and key names: short printable identifiers, they end up in
 * PKCS#11 labels (CKA_LABEL) and log lines. */
#define KYSO_MAX_NAME 64
#define KYSO_MAX_LABEL 128

/* Metadata strings (subject/title, number-notation, media type). */
#define KYSO_MAX_METADATA 1024
#define KYSO_MAX_REQUEST_ID 128

/* Certificate DER and chain: a government chain is root → sub-CA → leaf;
 * 8 leaves room for cross-certificates without letting a caller flood us. */
#define KYSO_MAX_CERT_DER (16 * 1024)
#define KYSO_MAX_CERT_CHAIN 8

/* Distinguished names for CSRs. */
#define KYSO_MAX_SUBJECT 512

/* Largest raw signature from the HSM: RSA-4096 is 512 bytes. */
#define KYSO_MAX_SIGNATURE 512

/* PKCS#11 session pool: one session per concurrent C_Sign; SoftHSM scales to
 * the core count, a network HSM to its licence. */
#define KYSO_HSM_MAX_SESSIONS 64

/* Keys in one token: 11,000 accounts + 1,000 unit seals, with headroom. */
#define KYSO_HSM_MAX_KEYS 100000

/* PIN files are short; anything longer is a wrong path. */
#define KYSO_MAX_PIN 256

/* Server threads. */
#define KYSO_MAX_THREADS 256

#endif
