/* kysod — grpc.health.v1.Health/Check, and the reply helper every service uses. */
#include <stdlib.h>
#include <string.h>

#include "kyso/log.h"
#include "kysod.h"

#include "grpc/health/v1/health.pb-c.h"

void kysod__reply(rpc_call *call, const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) {
    rpc_call_finish(call, KYSO_RESOURCE_EXHAUSTED, "out of memory packing the response", NULL, 0);
    return;
  }
  protobuf_c_message_pack(msg, buf);
  rpc_call_finish(call, KYSO_OK, "", buf, n);
  free(buf);
}

void kysod__reply_failure(rpc_call *call, const char *what, kyso_status st, const kyso_err *err) {
  kyso_log(KYSO_LOG_WARN, "%s failed principal=%s: %s", what, rpc_call_peer(call)->principal,
           err->msg);
  rpc_call_finish(call, st, err->msg, NULL, 0);
}

static const char *const known_services[] = {"", "kyso.v1.Signer", "kyso.v1.Keys",
                                             "kyso.v1.Archive", "kyso.v1.TimeStamp"};

/* The process serves, or it does not; the TSA, and the Signer when its
 * signatures carry kysod's own time-stamps, also need a provisioned TSA
 * whose clock is not behind its last genTime. */
static int service_serving(kysod *d, const char *service) {
  char why[256];
  if (!atomic_load(&d->serving)) return 0;
  int needs_tsa = strcmp(service, "kyso.v1.TimeStamp") == 0 ||
                  (strcmp(service, "kyso.v1.Signer") == 0 &&
                   d->cfg.timestamp == KYSO_TIMESTAMP_INTERNAL);
  if (needs_tsa && !kysod__tsa_ready(d, why, sizeof(why))) {
    kyso_log(KYSO_LOG_DEBUG, "health: %s not serving: %s", service, why);
    return 0;
  }
  return 1;
}

void kysod__health_check(rpc_call *call, void *app) {
  kysod *d = app;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Grpc__Health__V1__HealthCheckRequest *req =
      grpc__health__v1__health_check_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid grpc.health.v1.HealthCheckRequest", NULL, 0);
    return;
  }
  size_t i;
  for (i = 0; i < sizeof(known_services) / sizeof(known_services[0]); i++)
    if (strcmp(req->service, known_services[i]) == 0) break;
  if (i == sizeof(known_services) / sizeof(known_services[0])) {
    /* The health protocol answers NOT_FOUND for a service it does not know. */
    rpc_call_finish(call, KYSO_NOT_FOUND, "unknown service", NULL, 0);
  } else {
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = service_serving(d, req->service)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    kysod__reply(call, &resp.base);
  }
  grpc__health__v1__health_check_request__free_unpacked(req, NULL);
}
