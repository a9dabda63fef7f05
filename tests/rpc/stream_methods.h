/* kyso tests — streaming methods for an in-process rpc_server: what their
 * handlers saw is kept in S, and every handler's end is signalled on S.cond,
 * so tests wait for events, never for time. */
#ifndef KYSO_TESTS_RPC_STREAM_METHODS_H
#define KYSO_TESTS_RPC_STREAM_METHODS_H

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include "harness.h"

/* Client-streaming: reads every message, answers s_sum_reply. */
#define M_SUM "/kyso.test.Stream/Sum"
/* Server-streaming: request = 4-byte big-endian n; answers n messages, the
 * i-th being i as 4 bytes big-endian. */
#define M_COUNT "/kyso.test.Stream/Count"
/* Server-streaming: request = s_big_req; writes count messages of size bytes
 * (s_fill(i)), tracking how far it runs ahead of the client. */
#define M_BIG "/kyso.test.Stream/Big"
/* Server-streaming: one message, then waits for S.gate, then one more. */
#define M_GATE "/kyso.test.Stream/Gate"
/* The hook refuses both (operation "deny"). */
#define M_SUM_DENIED "/kyso.test.Stream/SumDenied"
#define M_COUNT_DENIED "/kyso.test.Stream/CountDenied"

#define S_DENY_MSG "account 'test' may not call the deny operation"

typedef struct s_sum_reply {
  uint64_t bytes;         /* little-endian on the wire: same process */
  uint64_t messages;
  uint8_t sha256[32];
} s_sum_reply;

typedef struct s_big_req {
  uint32_t count;
  uint32_t size;
} s_big_req;

typedef struct s_state {
  pthread_mutex_t mu;
  pthread_cond_t cond;      /* broadcast on every change below */
  sem_t gate;               /* posted by the test to let Gate write its second */
  int handler_calls;        /* handlers entered (the hook let them through) */
  int done;                 /* handlers that ended their call */
  kyso_status last_status;  /* the status the last handler ended with */
  char last_msg[KYSO_ERR_MSG_MAX];
  int64_t last_done_ms;     /* kyso_now_ms() when it ended */
  long reads;               /* messages Sum has read in its current call */
  long written;             /* messages Big had gRPC take, current call */
  long received;            /* messages the test's client took, current call */
  int in_flight;            /* Big's writes under way (must stay <= 1) */
  int max_in_flight;
  long max_ahead;           /* max of written - received seen by Big */
} s_state;

extern s_state S;

/* Once per process. */
void s_init(void);
/* Zeroes the per-call counters. */
void s_reset(void);
/* Starts a plaintext server with the streaming methods on 127.0.0.1:0 (opts
 * may set sizes and threads) and an insecure client; 0 on success. */
int s_start(harness *h, const rpc_server_opts *opts);
/* Waits until more than `done` handlers have ended (fails the test after a
 * minute: a hang, not a timing assumption); returns the new count. */
int s_wait_done(int done);
/* Waits until Sum has read at least n messages. */
void s_wait_reads(long n);
/* Reads S.done under the lock. */
int s_done(void);
/* The test's client took one more message of Big. */
void s_received(void);
/* Deterministic content of Big's i-th message. */
void s_fill(uint8_t *p, size_t n, uint32_t i);

/* Opens a stream or fails the test naming the method. */
kyso_stream *s_open_stream(kyso_client *cli, const char *method, int64_t timeout_ms);
/* Fails the test unless st is OK, naming what was being done. */
void s_must(kyso_status st, const kyso_err *err, const char *what);

#endif
