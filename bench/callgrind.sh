#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: stable
# whatever else the machine is doing, so levers can be compared one by one.
#   bench/callgrind.sh [BINARY] [SCENARIO]   (SCENARIO: get-cookie | login)
# Needs valgrind, nginx, wrk, curl. Prints "instructions/request" and leaves
# the callgrind profile in /tmp/tokenjar-callgrind.out for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/quick-release/tokenjar}
SCENARIO=${2:-get-cookie}
work=$(mktemp -d /tmp/tokenjar-cg.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; exit 1; }
UP=$(port); TJ=$(port)
JWT="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaCIsImV4cCI6NDEwMjQ0NDgwMH0.c2lnbmF0dXJl"
mkdir -p "$work/ub"
sed -e "s|@WORK@|$work|g" -e "s|@UPSTREAM_PORT@|$UP|g" -e "s|@JWT@|$JWT|g" -e "s|@UPSTREAM_TLS@||g" bench/upstream.conf > "$work/up.conf"
nginx -p "$work" -c "$work/up.conf" & pids+=($!)
wait_http "http://127.0.0.1:$UP/"
TOKENJAR_SERVER__PORT=$TJ TOKENJAR_SERVER__WORKERS=1 TOKENJAR_UPSTREAM__URL="http://127.0.0.1:$UP" \
TOKENJAR_COOKIE__SECURE=false TOKENJAR_COOKIE__NAME=auth-token TOKENJAR_COOKIE__KEYS="$("$BIN" keygen)" RUST_LOG=warn \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/tokenjar-callgrind.out \
    "$BIN" serve --config-dir "$work" 2> "$work/vg.log" & pids+=($!)
wait_http "http://127.0.0.1:$TJ/healthz"
COOKIE=$(curl -s -D - -o /dev/null -H 'x-csrf: 1' -d '{}' "http://127.0.0.1:$TJ/api/login" | tr -d '\r' \
    | sed -n 's/^set-cookie: \(auth-token=[^;]*\);.*/\1/Ip')
case $SCENARIO in
    get-cookie) args=(-H "Cookie: $COOKIE" "http://127.0.0.1:$TJ/api/echo") ;;
    login) args=(-s bench/login.lua "http://127.0.0.1:$TJ/api/login") ;;
esac
wrk -t1 -c8 -d3s "${args[@]}" > /dev/null          # warm the pools and caches
rm -f /tmp/tokenjar-callgrind.out*
callgrind_control -i on > /dev/null
out=$(wrk -t1 -c8 -d10s "${args[@]}")
callgrind_control -i off > /dev/null
callgrind_control -d > /dev/null
reqs=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
sleep 1
total=$(callgrind_annotate /tmp/tokenjar-callgrind.out.1 2>/dev/null | sed -n "s/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p" | tr -d "," | head -n 1)
echo "$SCENARIO: $reqs requests, $total instructions, $((total / reqs)) instructions/request"
