#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   1. installs missing packages (deploy/install-deps.sh)
#   2. builds and runs ctest in a normal build
#   3. builds and runs ctest under AddressSanitizer + UndefinedBehaviorSanitizer
#   4. builds and runs the HSM session-pool, gRPC dispatch, archive group-commit
#      and cluster (Raft loop, queues, TLS transport) tests (labels hsm, rpc,
#      archive, cluster; not e2e) under ThreadSanitizer
# Set KYSO_QUICK=1 to run step 2 only.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=$(nproc)

bash "$root/deploy/install-deps.sh"

run_suite() {
  local name=$1; shift
  local dir=$root/build-test-$name
  echo "== $name: configure and build ($dir)"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "== $name: ctest"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" ${CTEST_ARGS:-})
}

run_suite normal
if [ "${KYSO_QUICK:-0}" != 1 ]; then
  run_suite asan -DKYSO_ASAN=ON -DKYSO_UBSAN=ON
  CTEST_ARGS="-L hsm|rpc|archive|cluster -LE e2e" run_suite tsan -DKYSO_TSAN=ON
fi
echo "== all suites passed"
