#!/usr/bin/env bash
# tokenjar's soak: the end-to-end suite's soak test
# (tests/soak.rs, a_30_second_soak_keeps_memory_and_descriptors_flat)
# run for 10 minutes against a release build. 16 keep-alive clients send a
# steady mix of GETs with the sealed cookie, small POSTs, session checks and
# logins; tokenjar's VmRSS and open fds after warm-up and at the end must
# match (RSS within 5 % + 1 MiB, fds within +4) with no non-2xx answer.
# Prints the samples, the numbers and PASS or FAIL; exits non-zero on FAIL.
#
#   bench/soak.sh                     # 600 s, 16 clients × 50 requests/s
#   SOAK_SECONDS=120 bench/soak.sh    # a shorter run
#   SOAK_RATE=100 bench/soak.sh       # requests/s per client
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
export SOAK_SECONDS=${SOAK_SECONDS:-600}
export SOAK_RATE=${SOAK_RATE:-50}

target=${CARGO_TARGET_DIR:-target}
case $target in
    /*) ;;
    *) target="$PWD/$target" ;;
esac

"$CARGO" build --release -p tokenjar
# The harness runs the binary named here instead of the debug build.
export E2E_TOKENJAR_BIN="$target/release/tokenjar"

log=$(mktemp /tmp/tokenjar-soak.XXXXXX)
status=0
# The load generator stays a dev-profile test binary: it only paces blocking
# sockets, and a release build of the test crate (fat LTO) would take minutes.
"$CARGO" test -p tokenjar-e2e --test soak -- \
    --exact a_30_second_soak_keeps_memory_and_descriptors_flat --nocapture 2>&1 |
    tee "$log" || status=$?

echo
echo "== soak: ${SOAK_SECONDS} s, ${SOAK_RATE} requests/s per client, $E2E_TOKENJAR_BIN =="
grep -o 'soak: .*' "$log" || true
if [ "$status" -eq 0 ]; then
    echo "soak PASS (log: $log)"
else
    echo "soak FAIL, exit $status (log: $log)"
fi
exit "$status"
