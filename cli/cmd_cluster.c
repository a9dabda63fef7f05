/* kyso cluster — the Raft group as the node called sees it. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kyso/cluster.h"
#include "kyso/v1/cluster.pb-c.h"

static const char cluster_usage[] =
    "Usage: kyso cluster status [--json]\n"
    "       kyso cluster add ID RAFT_HOST:PORT RPC_HOST:PORT [--json]\n"
    "       kyso cluster remove ID [--json]\n"
    "       kyso cluster transfer [ID] [--json]\n"
    "       kyso cluster recover --kysod-config FILE --keep ID[,ID...] --yes\n"
    "\n"
    "status    the cluster as the node called sees it: its own state (leader,\n"
    "          follower, candidate), the term, the leader and where clients\n"
    "          reach it, the log's last, committed and applied indexes,\n"
    "          snapshots, and every member with its addresses and whether it votes\n"
    "add       adds node ID (started first with [cluster] join = true) and makes\n"
    "          it a voter once it caught up with the log\n"
    "remove    takes node ID out of the configuration (stop it afterwards)\n"
    "transfer  hands the leadership to node ID (default: the most up-to-date voter)\n"
    "recover   OFFLINE, after losing a majority for good: with kysod stopped on\n"
    "          every node, rewrites THIS node's Raft configuration (read from its\n"
    "          kysod configuration) to the surviving members --keep. Run it on one\n"
    "          survivor only, the one with the highest term and longest log; then\n"
    "          copy its whole data directory to the other survivors and start\n"
    "          them. Writes only the lost nodes held are lost. Needs --yes.\n"
    "\n"
    "Membership changes go to the leader (--address) and run one at a time;\n"
    "grow and shrink by one node per change, keeping an odd number of voters.\n"
    "\n"
    "  --json   one JSON object, for scripts\n"
    "\n"
    "Exit status: 0 when the node knows a leader (status) or the change is\n"
    "done, 1 otherwise, 2 on bad usage.\n";

static int print_json(const Kyso__V1__ClusterStatus *s) {
  cJSON *o = cJSON_CreateObject(), *ms = cJSON_CreateArray();
  cJSON_AddBoolToObject(o, "replicated", s->replicated);
  cJSON_AddNumberToObject(o, "id", (double)s->id);
  cJSON_AddStringToObject(o, "state", s->state);
  cJSON_AddNumberToObject(o, "term", (double)s->term);
  cJSON_AddNumberToObject(o, "leader_id", (double)s->leader_id);
  cJSON_AddStringToObject(o, "leader_rpc_address", s->leader_rpc_address);
  cJSON_AddNumberToObject(o, "last_index", (double)s->last_index);
  cJSON_AddNumberToObject(o, "commit_index", (double)s->commit_index);
  cJSON_AddNumberToObject(o, "applied_index", (double)s->applied_index);
  cJSON_AddNumberToObject(o, "snapshots_taken", (double)s->snapshots_taken);
  cJSON_AddNumberToObject(o, "snapshots_installed", (double)s->snapshots_installed);
  cJSON_AddNumberToObject(o, "checkpoints_installed", (double)s->checkpoints_installed);
  cJSON_AddNumberToObject(o, "keys_pending", (double)s->keys_pending);
  cJSON_AddNumberToObject(o, "writes_awaiting_commit", (double)s->writes_awaiting_commit);
  for (size_t i = 0; i < s->n_members; i++) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "id", (double)s->members[i]->id);
    cJSON_AddStringToObject(m, "raft_address", s->members[i]->raft_address);
    cJSON_AddStringToObject(m, "rpc_address", s->members[i]->rpc_address);
    cJSON_AddBoolToObject(m, "voter", s->members[i]->voter);
    cJSON_AddBoolToObject(m, "reachable", s->members[i]->reachable);
    cJSON_AddItemToArray(ms, m);
  }
  cJSON_AddItemToObject(o, "members", ms);
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (text == NULL) return cli_fail("out of memory printing the cluster status");
  puts(text);
  cJSON_free(text);
  return 0;
}

static void print_text(const Kyso__V1__ClusterStatus *s) {
  if (!s->replicated) {
    printf("node %llu: a single node (no [cluster] members configured); it takes every write\n",
           (unsigned long long)s->id);
    return;
  }
  printf("node %llu: %s, term %llu\n", (unsigned long long)s->id, s->state,
         (unsigned long long)s->term);
  if (s->leader_id != 0)
    printf("leader: node %llu%s%s\n", (unsigned long long)s->leader_id,
           s->leader_rpc_address[0] ? " at " : "", s->leader_rpc_address);
  else
    printf("leader: none known (an election is under way, or no majority is reachable)\n");
  printf("log: last %llu, committed %llu, applied %llu; snapshots taken %llu, installed %llu; "
         "checkpoints fetched at start %llu\n",
         (unsigned long long)s->last_index, (unsigned long long)s->commit_index,
         (unsigned long long)s->applied_index, (unsigned long long)s->snapshots_taken,
         (unsigned long long)s->snapshots_installed,
         (unsigned long long)s->checkpoints_installed);
  if (s->keys_pending > 0)
    printf("keys: %llu of the cluster's keys not installed in this node's token yet (its log "
           "says why)\n",
           (unsigned long long)s->keys_pending);
  printf("%-6s %-8s %-24s %s\n", "ID", "ROLE", "RAFT", "RPC");
  for (size_t i = 0; i < s->n_members; i++) {
    const Kyso__V1__ClusterMember *m = s->members[i];
    printf("%-6llu %-8s %-24s %s%s%s\n", (unsigned long long)m->id, m->voter ? "voter" : "standby",
           m->raft_address, m->rpc_address[0] ? m->rpc_address : "?",
           m->id == s->leader_id ? "  (leader)" : "",
           m->reachable ? "" : "  (unreachable: the leader has not heard from it lately)");
  }
}

static int parse_id(const char *v, uint64_t *out) {
  char *end = NULL;
  unsigned long long id = strtoull(v, &end, 10);
  if (end == v || *end != '\0' || id == 0 || id > 65535) {
    fprintf(stderr, "kyso cluster: '%s' is not a node id (1..65535)\n\n%s", v, cluster_usage);
    return 2;
  }
  *out = id;
  return 0;
}

/* kyso cluster recover: offline, on the node's own files. */
static int recover(int argc, char **argv) {
  const char *conf = NULL, *keep = NULL;
  int yes = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--kysod-config") == 0 && i + 1 < argc)
      conf = argv[++i];
    else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc)
      keep = argv[++i];
    else if (strcmp(argv[i], "--yes") == 0)
      yes = 1;
    else {
      fprintf(stderr, "kyso cluster recover: unexpected argument '%s'\n\n%s", argv[i],
              cluster_usage);
      return 2;
    }
  }
  if (conf == NULL || keep == NULL) {
    fputs(cluster_usage, stderr);
    return 2;
  }
  kyso_config cfg;
  kyso_err err = {0};
  if (kyso_config_load(conf, &cfg, &err) != KYSO_OK) return cli_fail("%s", err.msg);
  cluster_member m[KYSO_MAX_CLUSTER_MEMBERS];
  size_t n = 0;
  int rc = 1;
  char list[256];
  snprintf(list, sizeof(list), "%s", keep);
  char *save = NULL;
  for (char *tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
    uint64_t id = 0;
    if (parse_id(tok, &id) != 0) goto out;
    size_t k;
    for (k = 0; k < cfg.member_count && cfg.members[k].id != id; k++) {
    }
    if (k == cfg.member_count) {
      rc = cli_fail("node %llu is not a [cluster] member in %s", (unsigned long long)id, conf);
      goto out;
    }
    if (n == KYSO_MAX_CLUSTER_MEMBERS) goto out;
    m[n++] = (cluster_member){id, cfg.members[k].raft, cfg.members[k].rpc};
  }
  char dir[KYSO_PATH_MAX + 16];
  if (cfg.raft_dir[0])
    snprintf(dir, sizeof(dir), "%s", cfg.raft_dir);
  else
    snprintf(dir, sizeof(dir), "%s/raft", cfg.data_dir);
  fprintf(stderr,
          "kyso cluster recover: node %u's Raft log in %s will name %zu member(s) (%s).\n"
          "  kysod must be stopped on EVERY node. Writes that only the lost nodes held are lost.\n"
          "  Afterwards copy this node's whole data directory to the other survivors, then\n"
          "  start them all.\n",
          cfg.node_id, dir, n, keep);
  if (!yes) {
    rc = cli_fail("nothing changed: add --yes to recover");
    goto out;
  }
  if (cluster_recover(dir, cfg.node_id, m, n, 1, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  printf("recovered: node %u's Raft configuration now lists %zu member(s): start it\n",
         cfg.node_id, n);
  rc = 0;
out:
  kyso_config_free(&cfg);
  return rc;
}

int cli_cluster(cli *c, int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "recover") == 0) return recover(argc, argv);
  int json = 0, help = 0;
  const char *pos[4];
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      help = 1;
    else if (argv[i][0] == '-' || npos == 4) {
      fprintf(stderr, "kyso cluster: unexpected argument '%s'\n\n%s", argv[i], cluster_usage);
      return 2;
    } else {
      pos[npos++] = argv[i];
    }
  }
  if (help) {
    fputs(cluster_usage, stdout);
    return 0;
  }
  const char *what = npos > 0 ? pos[0] : "";
  const char *method = NULL;
  ProtobufCMessage *req = NULL;
  Kyso__V1__ClusterStatusRequest sreq = KYSO__V1__CLUSTER_STATUS_REQUEST__INIT;
  Kyso__V1__ClusterAddRequest areq = KYSO__V1__CLUSTER_ADD_REQUEST__INIT;
  Kyso__V1__ClusterRemoveRequest rreq = KYSO__V1__CLUSTER_REMOVE_REQUEST__INIT;
  Kyso__V1__ClusterTransferRequest treq = KYSO__V1__CLUSTER_TRANSFER_REQUEST__INIT;
  if (strcmp(what, "status") == 0 && npos == 1) {
    method = "/kyso.v1.Cluster/Status";
    req = &sreq.base;
  } else if (strcmp(what, "add") == 0 && npos == 4) {
    if (parse_id(pos[1], &areq.id)) return 2;
    areq.raft_address = (char *)pos[2];
    areq.rpc_address = (char *)pos[3];
    method = "/kyso.v1.Cluster/Add";
    req = &areq.base;
  } else if (strcmp(what, "remove") == 0 && npos == 2) {
    if (parse_id(pos[1], &rreq.id)) return 2;
    method = "/kyso.v1.Cluster/Remove";
    req = &rreq.base;
  } else if (strcmp(what, "transfer") == 0 && npos <= 2) {
    if (npos == 2 && parse_id(pos[1], &treq.id)) return 2;
    method = "/kyso.v1.Cluster/Transfer";
    req = &treq.base;
  } else {
    fputs(cluster_usage, stderr);
    return 2;
  }
  if (strcmp(what, "status") != 0 && !json)
    fprintf(stderr, "kyso cluster %s: asking the leader (this can take a few seconds)...\n",
            what);
  Kyso__V1__ClusterStatus *s = NULL;
  int rc = cli_call(c, method, req, &kyso__v1__cluster_status__descriptor,
                    (ProtobufCMessage **)&s);
  if (rc) return rc;
  if (json)
    rc = print_json(s);
  else
    print_text(s);
  if (rc == 0 && strcmp(what, "status") == 0) rc = s->leader_id != 0 ? 0 : 1;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return rc;
}
