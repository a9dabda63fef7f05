#!/usr/bin/env bash
# kyso local cluster: three kysod nodes on loopback, one Raft group over
# mutual TLS, for trying replication and failover on one machine.
# Everything it makes stays under demo-cluster/ (git-ignored).
#
#   deploy/cluster.sh up [--fresh]   build if needed, make what is missing
#                                    (PKI, tokens, configs), start the nodes
#                                    that are not running, wait for a leader
#                                    that hears every member. --fresh first
#                                    stops the cluster and deletes its state.
#   deploy/cluster.sh down [--purge] stop every node (SIGTERM, graceful);
#                                    --purge also deletes demo-cluster/
#   deploy/cluster.sh status [N]     `kyso cluster status` (node N, default:
#                                    the leader), and one line per node
#   deploy/cluster.sh --help
#
# Environment:
#   KYSO_CLUSTER_PORT  base port (default 7500): node N serves gRPC on
#                      BASE+N, Raft on BASE+10+N, RFC 3161 HTTP on BASE+20+N
#   KYSO_CLUSTER_WAIT  seconds to wait for a leader (default 30)
#   KYSO_BUILD_JOBS    parallel build jobs (default: every core)
#   KYSO_SKIP_BUILD=1  use the binaries already in build/ as they are
#
# Other scripts may source this file for its helpers (kyso_on, leader_id,
# wait_for_leader, ...); it then runs nothing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster_dir=$root/demo-cluster
build=$root/build
kysod=$build/server/kysod
kyso=$build/cli/kyso
nodes=(1 2 3)
softhsm_module=/usr/lib/softhsm/libsofthsm2.so
wait_seconds=${KYSO_CLUSTER_WAIT:-30}

# --- small helpers ---------------------------------------------------------

cl_say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cl_info() { printf '   %s\n' "$*"; }
cl_die() { echo "cluster.sh: $*" >&2; exit 1; }
rel() { echo "${1#"$root"/}"; } # paths as the user types them, from the repo root

now_ms() { date +%s%3N; }

# The base port of an existing cluster wins over the environment: its
# configuration files already name those ports.
base_port() {
  if [ -f "$cluster_dir/cluster.env" ]; then
    sed -n 's/^base_port=//p' "$cluster_dir/cluster.env"
  else
    echo "${KYSO_CLUSTER_PORT:-7500}"
  fi
}
rpc_port() { echo $(($(base_port) + $1)); }
raft_port() { echo $(($(base_port) + 10 + $1)); }
tsa_port() { echo $(($(base_port) + 20 + $1)); }

node_dir() { echo "$cluster_dir/node$1"; }
node_conf() { echo "$cluster_dir/node$1/kyso.conf"; }
node_pid() { cat "$(node_dir "$1")/kysod.pid" 2>/dev/null || true; }
node_running() {
  local pid
  pid=$(node_pid "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kyso_on N ARGS...: the kyso command against node N (its [cli] section).
kyso_on() {
  local n=$1
  shift
  "$kyso" --config "$(node_conf "$n")" "$@"
}

# cluster status of node N as JSON, or nothing when it does not answer.
status_json() { kyso_on "$1" --timeout 3 cluster status --json 2>/dev/null || true; }

# The id of the node that says it leads, asking each running node, or "".
leader_id() {
  local n j
  for n in "${nodes[@]}"; do
    node_running "$n" || continue
    j=$(status_json "$n")
    if [ -n "$j" ] && jq -e '.state == "leader"' >/dev/null <<<"$j"; then
      echo "$n"
      return 0
    fi
  done
  echo ""
}

# wait_for_leader [NOT_ID]: polls until a running node leads (and is not
# NOT_ID, a node just killed whose old status might linger); prints its id.
wait_for_leader() {
  local not=${1:-0} deadline l
  deadline=$(($(now_ms) + wait_seconds * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    l=$(leader_id)
    if [ -n "$l" ] && [ "$l" != "$not" ]; then
      echo "$l"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# wait_all_reachable: polls until a leader reports every member as a
# reachable voter; prints the leader's id.
wait_all_reachable() {
  local deadline l j
  deadline=$(($(now_ms) + wait_seconds * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    l=$(leader_id)
    if [ -n "$l" ]; then
      j=$(status_json "$l")
      if [ -n "$j" ] && jq -e --argjson n "${#nodes[@]}" \
        '(.members | length) == $n and all(.members[]; .voter and .reachable)' >/dev/null <<<"$j"; then
        echo "$l"
        return 0
      fi
    fi
    sleep 0.2
  done
  return 1
}

# applied_index N: the last log index node N applied to its archive.
applied_index() { status_json "$1" | jq -r '.applied_index // 0'; }

# wait_caught_up N INDEX: polls until node N applied at least INDEX.
wait_caught_up() {
  local n=$1 want=$2 deadline
  deadline=$(($(now_ms) + wait_seconds * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    [ "$(applied_index "$n")" -ge "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

# --- up: build, provision, start -------------------------------------------

ensure_built() {
  if [ "${KYSO_SKIP_BUILD:-0}" = 1 ] && [ -x "$kysod" ] && [ -x "$kyso" ]; then
    cl_info "KYSO_SKIP_BUILD=1: using $(rel "$kysod") and $(rel "$kyso") as they are"
    return
  fi
  cl_say "Building kysod and kyso (cmake, $(rel "$build"))"
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  local targets=(kysod kyso)
  # The key-ceremony tool, once it exists in the tree (see share_kek).
  if cmake --build "$build" --target help 2>/dev/null | grep -qw kyso-token; then
    targets+=(kyso-token)
  fi
  # Only what was rebuilt, warnings and errors: not the "Built target" lines.
  cmake --build "$build" -j"${KYSO_BUILD_JOBS:-$(nproc)}" --target "${targets[@]}" |
    { grep -v '^\[ *[0-9]*%\] Built target' || true; } ||
    cl_die "the build failed. If someone is changing the code right now, retry in a few minutes;
  or run with KYSO_SKIP_BUILD=1 to use the binaries already in $(rel "$build")."
}

check_tools() {
  local t
  for t in openssl softhsm2-util jq cmake; do
    command -v "$t" >/dev/null || cl_die "'$t' is missing: run deploy/install-deps.sh first"
  done
  [ -f "$softhsm_module" ] || cl_die "$softhsm_module is missing: run deploy/install-deps.sh first"
}

# One CA for the whole cluster (the production shape): it signs every node's
# server certificate, the nodes authenticate each other with them (mTLS, and
# each node lists the others' fingerprints with roles = peer), and the same
# CA issues the clients' certificates.
make_pki() {
  local pki=$cluster_dir/pki
  cl_say "A throw-away PKI for the cluster ($(rel "$pki"))"
  bash "$root/tests/fixtures/pki.sh" init "$pki"
  # pki.sh init also makes a generic localhost server certificate; every node
  # gets its own below, so drop it to leave no doubt which one a node uses.
  rm -f "$pki/server.pem" "$pki/server.key"
  cat "$pki/root.pem" "$pki/chain.pem" > "$pki/client-ca.pem"
  cl_info "trust anchor $(rel "$pki")/root.pem; client certificate $(rel "$pki")/client.pem"
}

# node_certificate N: node N's own TLS key and certificate (serverAuth and
# clientAuth: it serves clients and calls its peers with it).
node_certificate() {
  local n=$1 tls
  tls=$(node_dir "$n")/tls
  mkdir -p "$tls"
  chmod 700 "$tls"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/server.key" 2>/dev/null
  chmod 600 "$tls/server.key"
  openssl req -new -key "$tls/server.key" -subj "/C=VN/O=Kyso Test/CN=kyso-node$n" -out "$tls/server.csr"
  bash "$root/tests/fixtures/pki.sh" issue "$cluster_dir/pki" "$tls/server.csr" "$tls/server.pem" server 30
  rm -f "$tls/server.csr"
  cat "$tls/server.pem" "$cluster_dir/pki/chain.pem" > "$tls/server-chain.pem"
}

# node_token N: node N's own SoftHSM token directory and configuration
# (SoftHSM loads every token in its directory, so nodes never share one),
# with random PINs kept only in 0600 files.
node_token() {
  local n=$1 hsm pin sopin
  hsm=$(node_dir "$n")/hsm
  pin=$(openssl rand -hex 8)
  sopin=$(openssl rand -hex 8)
  bash "$root/tests/fixtures/softhsm.sh" "$hsm" "kyso-node$n" "$pin" "$sopin" >/dev/null
  (umask 077 && printf '%s\n' "$pin" > "$hsm/user.pin" && printf '%s\n' "$sopin" > "$hsm/so.pin")
  unset pin sopin
}

fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }

# write_node_conf N: node N's kysod configuration, also usable by the kyso
# command (its [cli] section). Every node lists the same members.
# shellcheck disable=SC2094 # (rel only edits the path string; it reads no file)
write_node_conf() {
  local n=$1 m members="" peers="" client_fp conf
  conf=$(node_conf "$n")
  for m in "${nodes[@]}"; do
    members+="member = $m 127.0.0.1:$(raft_port "$m") 127.0.0.1:$(rpc_port "$m")"$'\n'
    peers+=$'\n'"[caller.node$m]"$'\n'"fingerprint = $(fingerprint "$(node_dir "$m")/tls/server.pem")"$'\n'"roles = peer"$'\n'
  done
  client_fp=$(fingerprint "$cluster_dir/pki/client.pem")
  cat > "$conf" <<CONF
# kyso demo cluster, node $n (made by deploy/cluster.sh). Relative paths are
# relative to this file. SOFTHSM2_CONF=hsm/softhsm2.conf (this node's own).
[server]
node_id = $n
listen = 127.0.0.1:$(rpc_port "$n")
data_dir = data
worker_threads = 4
log_level = info

[tls]
cert = tls/server-chain.pem
key = tls/server.key
client_ca = ../pki/client-ca.pem

[hsm]
module = $softhsm_module
token = kyso-node$n
pin_file = hsm/user.pin
sessions = 4

[tsa]
http_listen = 127.0.0.1:$(tsa_port "$n")

# The Raft group: the same member lines on every node. The Raft log is in
# data/raft (raft_dir). Nodes accept Raft and document traffic only from the
# certificates listed below with roles = peer, chaining to peer_ca.
[cluster]
${members}peer_ca = ../pki/client-ca.pem

# The demo's one client may do everything; production gives each caller one role.
[caller.demo]
fingerprint = $client_fp
roles = service,operator,archivist
${peers}
# What the kyso command uses: kyso --config $(rel "$conf") ...
[cli]
address = 127.0.0.1:$(rpc_port "$n")
ca = ../pki/root.pem
cert = ../pki/client.pem
key = ../pki/client.key
server_name = localhost
CONF
}

# share_kek: the key-encryption-key ceremony. Every node's token must hold
# the same trusted KEK (CKA_TRUSTED, set by the security officer) so that a
# key generated on one node can later be wrapped once and unwrapped into the
# other nodes' tokens (DESIGN.md, Replication). Done while no kysod runs,
# with one random KEK that exists on disk only until the last token has it.
share_kek() {
  local tool="" t n hsm kek_dir
  for t in "$build/hsm/kyso-token" "$build/cli/kyso-token"; do
    [ -x "$t" ] && tool=$t && break
  done
  if [ -z "$tool" ]; then
    cl_info "no kyso-token tool built yet: no shared KEK, so a key stays in the token of the node that made it"
    return
  fi
  cl_say "Key-encryption-key ceremony: one KEK into every node's token ($(rel "$tool") import-kek)"
  kek_dir=$(mktemp -d "$cluster_dir/.kek-XXXXXX")
  # A subshell, so that its EXIT trap deletes the KEK even when a node fails.
  (
    trap 'shred -u "$kek_dir/kek.bin" 2>/dev/null || rm -f "$kek_dir/kek.bin"; rmdir "$kek_dir"' EXIT
    chmod 700 "$kek_dir"
    (umask 077 && openssl rand -out "$kek_dir/kek.bin" 32)
    for n in "${nodes[@]}"; do
      hsm=$(node_dir "$n")/hsm
      SOFTHSM2_CONF=$hsm/softhsm2.conf "$tool" import-kek --module "$softhsm_module" \
        --token "kyso-node$n" --so-pin-file "$hsm/so.pin" --user-pin-file "$hsm/user.pin" \
        --kek-file "$kek_dir/kek.bin" ||
        cl_die "import-kek failed on node $n; start over with: deploy/cluster.sh up --fresh"
      cl_info "node $n: KEK imported into token kyso-node$n"
    done
  )
  cl_info "the KEK file is deleted; it now exists only inside the three tokens"
}

provision() {
  [ -f "$cluster_dir/cluster.env" ] && return
  local base=${KYSO_CLUSTER_PORT:-7500} n
  case "$base" in '' | *[!0-9]*) cl_die "KYSO_CLUSTER_PORT must be a number, not '$base'" ;; esac
  if [ "$base" -lt 1024 ] || [ "$base" -gt 65500 ]; then cl_die "KYSO_CLUSTER_PORT must be 1024..65500"; fi
  rm -rf "$cluster_dir"
  mkdir -p "$cluster_dir"
  chmod 700 "$cluster_dir"
  make_pki
  cl_say "Per node: its own TLS certificate, SoftHSM token, data directory and kyso.conf"
  for n in "${nodes[@]}"; do
    mkdir -p "$(node_dir "$n")/data"
    chmod 700 "$(node_dir "$n")" "$(node_dir "$n")/data"
    node_certificate "$n"
    node_token "$n"
    cl_info "node $n: $(rel "$(node_dir "$n")")/ (token kyso-node$n, PINs in hsm/*.pin, mode 0600)"
  done
  # Every node's configuration names every node's certificate: write them last.
  echo "base_port=$base" > "$cluster_dir/cluster.env.tmp"
  for n in "${nodes[@]}"; do write_node_conf "$n"; done
  share_kek
  mv "$cluster_dir/cluster.env.tmp" "$cluster_dir/cluster.env" # provisioning finished
}

# check_ports: every port of every node not running is free, before any
# node starts (no half-started cluster).
check_ports() {
  local n p
  for n in "${nodes[@]}"; do
    node_running "$n" && continue
    for p in "$(rpc_port "$n")" "$(raft_port "$n")" "$(tsa_port "$n")"; do
      if port_busy "$p"; then
        cl_die "port $p (node $n) is already in use by another program.
  Stop it, or start over on other ports: deploy/cluster.sh down --purge; KYSO_CLUSTER_PORT=8500 deploy/cluster.sh up"
      fi
    done
  done
}

# start_node N: starts node N's kysod in the background and waits for it to
# say it serves (it does not wait for the cluster).
start_node() {
  local n=$1 d deadline
  d=$(node_dir "$n")
  : > "$d/kysod.out"
  SOFTHSM2_CONF=$d/hsm/softhsm2.conf nohup "$kysod" --config "$d/kyso.conf" \
    > "$d/kysod.out" 2>> "$d/kysod.log" < /dev/null &
  echo $! > "$d/kysod.pid"
  deadline=$(($(now_ms) + wait_seconds * 1000))
  until grep -q "kysod: ready" "$d/kysod.out"; do
    if ! node_running "$n"; then
      tail -n 20 "$d/kysod.log" >&2
      cl_die "node $n's kysod exited (its log is above, all of it in $(rel "$d")/kysod.log)"
    fi
    [ "$(now_ms)" -lt "$deadline" ] || cl_die "node $n did not get ready in ${wait_seconds}s; see $(rel "$d")/kysod.log"
    sleep 0.1
  done
  cl_info "node $n: kysod pid $(node_pid "$n"), gRPC 127.0.0.1:$(rpc_port "$n"), Raft :$(raft_port "$n"), TSA http :$(tsa_port "$n")"
}

# print_summary LEADER WHERE: the status, and with WHERE=1 where things are.
print_summary() {
  local l=$1 where=$2
  cl_say "The cluster is up: node $l leads, every member is reachable"
  kyso_on "$l" cluster status
  [ "$where" = 1 ] || return 0
  cat <<EOF

Where things are (under $(rel "$cluster_dir")/):
  pki/root.pem                  trust anchor; pki/client.pem + client.key: the client certificate
  nodeN/kyso.conf               node N's configuration (and the kyso command's [cli] settings)
  nodeN/data/, nodeN/data/raft  its archive (RocksDB) and Raft log
  nodeN/hsm/                    its own SoftHSM token (SOFTHSM2_CONF=nodeN/hsm/softhsm2.conf), PINs in 0600 files
  nodeN/kysod.log               its log
How to call it:
  build/cli/kyso --config demo-cluster/node$l/kyso.conf cluster status
  build/cli/kyso --config demo-cluster/nodeN/kyso.conf health
  Any node serves every call (a follower passes writes to the leader); a key
  made on any node is installed in every node's token.
  deploy/cluster.sh status | down
EOF
}

cmd_up() {
  local fresh=0 n running=0 l made=0
  case "${1:-}" in
    --fresh) fresh=1 ;;
    "") ;;
    *) cl_die "up: unknown option '$1' (try --help)" ;;
  esac
  if [ "$fresh" = 1 ]; then
    cmd_down --purge
  fi
  for n in "${nodes[@]}"; do node_running "$n" && running=$((running + 1)); done
  if [ "$running" = "${#nodes[@]}" ]; then
    echo "cluster.sh: the cluster is already running (${#nodes[@]} nodes); 'deploy/cluster.sh status' shows it"
    return 0
  fi
  if [ -f "$cluster_dir/cluster.env" ] && [ -n "${KYSO_CLUSTER_PORT:-}" ] &&
    [ "$KYSO_CLUSTER_PORT" != "$(base_port)" ]; then
    cl_die "demo-cluster/ was made for base port $(base_port), not $KYSO_CLUSTER_PORT.
  Unset KYSO_CLUSTER_PORT, or start over: deploy/cluster.sh up --fresh"
  fi
  check_tools
  ensure_built
  [ -f "$cluster_dir/cluster.env" ] || made=1
  provision
  check_ports
  cl_say "Starting kysod on each node that is not running (base port $(base_port))"
  for n in "${nodes[@]}"; do
    if node_running "$n"; then
      cl_info "node $n: already running (pid $(node_pid "$n"))"
    else
      start_node "$n"
    fi
  done
  cl_say "Waiting for a leader that hears all ${#nodes[@]} members (up to ${wait_seconds}s)"
  local t0
  t0=$(now_ms)
  l=$(wait_all_reachable) || {
    kyso_on 1 cluster status >&2 || true
    cl_die "no leader heard every member within ${wait_seconds}s; see demo-cluster/node*/kysod.log"
  }
  cl_info "node $l leads; all members reachable after $(($(now_ms) - t0)) ms"
  print_summary "$l" "$made"
}

# --- down ------------------------------------------------------------------

cmd_down() {
  local purge=0 n pid stopped=0 deadline t0
  case "${1:-}" in
    --purge) purge=1 ;;
    "") ;;
    *) cl_die "down: unknown option '$1' (try --help)" ;;
  esac
  # SIGTERM to all first: they stop in parallel, each finishing its calls.
  for n in "${nodes[@]}"; do
    node_running "$n" && kill -TERM "$(node_pid "$n")"
  done
  t0=$(now_ms)
  deadline=$((t0 + 30000)) # above kysod's shutdown_grace_ms (10 s)
  for n in "${nodes[@]}"; do
    pid=$(node_pid "$n")
    [ -n "$pid" ] || continue
    while kill -0 "$pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      cl_die "node $n (pid $pid) is still running 30 s after SIGTERM; see demo-cluster/node$n/kysod.log, then kill -KILL $pid"
    fi
    echo "stopped node $n (pid $pid) after $(($(now_ms) - t0)) ms"
    rm -f "$(node_dir "$n")/kysod.pid"
    stopped=$((stopped + 1))
  done
  [ "$stopped" -gt 0 ] || echo "cluster.sh: no node was running"
  if [ "$purge" = 1 ] && [ -d "$cluster_dir" ]; then
    rm -rf "$cluster_dir"
    echo "deleted $(rel "$cluster_dir")/ (PKI, tokens, archives)"
  fi
}

# --- status ----------------------------------------------------------------

cmd_status() {
  local which=${1:-} n j any=0
  [ -f "$cluster_dir/cluster.env" ] || cl_die "there is no demo cluster here: start one with deploy/cluster.sh up"
  printf '%-6s %-8s %-10s %-22s %s\n' NODE PID STATE GRPC APPLIED
  for n in "${nodes[@]}"; do
    if node_running "$n"; then
      any=1
      j=$(status_json "$n")
      [ -n "$j" ] || j='{"state": "silent"}'
      printf '%-6s %-8s %-10s %-22s %s\n' "$n" "$(node_pid "$n")" "$(jq -r '.state' <<<"$j")" \
        "127.0.0.1:$(rpc_port "$n")" "$(jq -r '.applied_index // "?"' <<<"$j")"
    else
      printf '%-6s %-8s %-10s %-22s %s\n' "$n" - stopped "127.0.0.1:$(rpc_port "$n")" -
    fi
  done
  [ "$any" = 1 ] || cl_die "no node is running: start them with deploy/cluster.sh up"
  if [ -z "$which" ]; then which=$(leader_id); fi
  if [ -z "$which" ]; then
    for n in "${nodes[@]}"; do node_running "$n" && which=$n && break; done
  fi
  echo
  echo "\$ kyso --config $(rel "$(node_conf "$which")") cluster status"
  kyso_on "$which" cluster status
}

main() {
  case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) shift; cmd_status "$@" ;;
    --help | -h | help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    "") cl_die "say what to do: up, down or status (try --help)" ;;
    *) cl_die "unknown command '$1' (try --help)" ;;
  esac
}

# Run only when executed, not when sourced for the helpers above.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
