#!/usr/bin/env bash
# tokenjar's benchmark: tokenjar and nginx side by side as cookie → header
# proxies in front of the same fast nginx upstream, driven by wrk in
# interleaved rounds. The proxies share one pinned core; wrk and the upstream
# get the other. Prints a markdown table of medians (req/s, p50, p99, CPU µs
# per request, peak RSS of each scenario) and the tokenjar/nginx ratios.
#
#   bench/run.sh                      # 5 rounds × 10 s per scenario and proxy
#   (tls-listener and tls-handshake: both proxies terminate TLS for wrk, with
#   one P-256 certificate from a CA made here; keep-alive, and a new
#   connection per request. get-cookie-https: both proxies call the
#   upstream's https port with that certificate, verified, kept alive)
#   (websocket: echo round trips per second through each proxy's
#   WebSocket relay, CONNS sockets with one 128-byte message in flight
#   each, against tests/ws_bench's echo API and load generator)
#   (get-cookie-chunked: a session of a 7 KB token, sealed over three
#   cookies, against nginx passing the same token in one clear cookie)
#   (refresh: every request's access token is due, so each makes a refresh
#   call to the API, then the API call; 1,024 sessions taken in turn, so
#   that concurrent requests do not share one refresh. nginx's peer
#   makes the same two calls with auth_request, bench/nginx-proxy.conf)
#   (get-cookie-oidc: tokenjar in OIDC mode against tests/oidc_bench's
#   fake OpenID Provider, one login's session, a ~4 KB access token with
#   a refresh token and a profile sealed over several cookies; nginx gets
#   the same access token in clear in one cookie)
#   (oidc-login: whole OIDC logins per second, CONNS at once: tokenjar's
#   login route, the provider's authorization endpoint, tokenjar's
#   callback with its code exchange and ID-token check; the provider runs
#   on the load's CPU, so CPU µs per login is tokenjar's alone. No nginx
#   peer: nginx cannot do an OIDC login)
#   (get-cookie-redis: the cookie GET with sessions in Redis,
#   session.store = "redis": the cookie holds a sealed id and every request
#   reads the session from a redis-server on the load's CPU; against the
#   same GET with the cookie store and nginx. Also prints the Redis
#   commands per request, from Redis's own counters)
#   ROUNDS=1 DURATION=3 bench/run.sh  # a quick look
#   SCENARIOS="get-cookie login" bench/run.sh
#   BENCH_BIN=/tmp/tokenjar-before bench/run.sh   # another build
#   BENCH_BASE=/tmp/tokenjar-before bench/run.sh  # also that build, as
#       "base", interleaved in the same rounds: before/after ratios to
#       nginx from one run, whatever the machine's speed does meanwhile
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SCENARIOS=${SCENARIOS:-"get-cookie get-nocookie post-64k post-1m download-100m login tls-listener tls-handshake get-cookie-https websocket get-cookie-chunked refresh get-cookie-oidc oidc-login get-cookie-redis"}

need() { command -v "$1" >/dev/null || { echo "bench: '$1' is missing (apt-get install $2)" >&2; exit 1; }; }
need wrk wrk
need nginx nginx
need curl curl
need python3 python3
need openssl openssl

work=$(mktemp -d /tmp/tokenjar-bench.XXXXXX)
# nginx workers run as an unprivileged user: they must be able to read the files.
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}" ${TOKENJAR_PID:-} ${NGINX_MASTER:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# BENCH_BIN=path benchmarks another build (e.g. before/after a change).
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    echo "bench: building tokenjar (release)" >&2
    cargo build --release -p tokenjar >&2
    BIN=$PWD/target/release/tokenjar
fi
# The websocket scenario's echo API and load generator.
WS_BENCH=$PWD/target/release/ws-bench
case " $SCENARIOS " in
    *" websocket "*)
        echo "bench: building ws-bench (release)" >&2
        cargo build --release -p tokenjar-e2e --bin ws-bench >&2 ;;
esac
# The OIDC scenarios' fake OpenID Provider and login load generator.
OIDC_BENCH=$PWD/target/release/oidc-bench
OIDC=
case " $SCENARIOS " in
    *" get-cookie-oidc "* | *" oidc-login "*)
        OIDC=1
        echo "bench: building oidc-bench (release)" >&2
        cargo build --release -p tokenjar-e2e --bin oidc-bench >&2 ;;
esac

if [ "$(nproc)" -ge 2 ]; then
    PROXY_CPU=(taskset -c 0)
    LOAD_CPU=(taskset -c 1)
    PINNING="proxies on CPU 0; wrk and the upstream on CPU 1"
else
    PROXY_CPU=()
    LOAD_CPU=()
    PINNING="one core: nothing pinned"
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 200); do
        curl -sk -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "bench: $1 never answered" >&2
    exit 1
}
# wait_ok URL: until URL answers 2xx (a 503 /readyz is not ready yet).
wait_ok() {
    for _ in $(seq 1 200); do
        curl -sfk -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "bench: $1 never answered 2xx" >&2
    exit 1
}

UPSTREAM_PORT=$(free_port)
TOKENJAR_PORT=$(free_port)
NGINX_PORT=$(free_port)
TOKENJAR_TLS_PORT=$(free_port)
NGINX_TLS_PORT=$(free_port)
UPSTREAM_TLS_PORT=$(free_port)
NGINX_HTTPS_UP_PORT=$(free_port)
WS_PORT=$(free_port)
NGINX_REFRESH_PORT=$(free_port)
PROVIDER_PORT=$(free_port)
REDIS_PORT=$(free_port)
JWT=$(python3 -c 'import base64, json
e = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
print(e({"alg": "HS256", "typ": "JWT"}) + "." + e({"sub": "bench", "exp": 4102444800}) + ".c2lnbmF0dXJlLWJ5LXRoZS1hcGk")')
# The access token the API's /refresh answers (refresh): another subject, so
# that the token the API is sent tells a refreshed session.
JWT2=$(python3 -c 'import base64, json
e = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
print(e({"alg": "HS256", "typ": "JWT"}) + "." + e({"sub": "bench-refreshed", "exp": 4102444800}) + ".c2lnbmF0dXJlLWJ5LXRoZS1hcGk")')
# A token of about 7 KB (a JWT with many roles), whose sealed session takes
# three cookies (get-cookie-chunked).
BIGJWT=$(python3 -c 'import base64, json
e = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
roles = ["role-%04d" % i for i in range(400)]
print(e({"alg": "HS256", "typ": "JWT"}) + "." + e({"sub": "bench", "exp": 4102444800, "roles": roles}) + ".c2lnbmF0dXJlLWJ5LXRoZS1hcGk")')
head -c $((100 * 1024 * 1024)) /dev/zero > "$work/big.bin"
mkdir -p "$work/ub" "$work/pb" "$work/pt" "$work/none"
# A CA and a server certificate for 127.0.0.1 signed by it: the proxies'
# TLS listeners and the upstream's https port use the same one, and both
# proxies verify the upstream against the CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=tokenjar bench CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/tls.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 1 -extfile "$work/tls.ext" -out "$work/tls.crt" 2> /dev/null
chmod 644 "$work/tls.key"

render() {
    sed -e "s|@WORK@|$work|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
        -e "s|@NGINX_TLS_PORT@|$NGINX_TLS_PORT|g" -e "s|@WS_PORT@|$WS_PORT|g" -e "s|@JWT@|$JWT|g" \
        -e "s|@JWT2@|$JWT2|g" -e "s|@NGINX_REFRESH_PORT@|$NGINX_REFRESH_PORT|g" \
        -e "s|@UPSTREAM_TLS_PORT@|$UPSTREAM_TLS_PORT|g" -e "s|@NGINX_HTTPS_UP_PORT@|$NGINX_HTTPS_UP_PORT|g" \
        -e "s|@BIGJWT1@|${BIGJWT:0:3000}|g" -e "s|@BIGJWT2@|${BIGJWT:3000:3000}|g" -e "s|@BIGJWT3@|${BIGJWT:6000}|g" \
        -e "s|@UPSTREAM_TLS@|listen 127.0.0.1:$UPSTREAM_TLS_PORT ssl backlog=4096; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;|g" \
        "bench/$1" > "$work/$1"
}
render upstream.conf
render nginx-proxy.conf

"${LOAD_CPU[@]}" nginx -p "$work" -c "$work/upstream.conf" &
pids+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/"
if [ -x "$WS_BENCH" ]; then
    "${LOAD_CPU[@]}" "$WS_BENCH" echo "$WS_PORT" &
    pids+=($!)
    wait_http "http://127.0.0.1:$WS_PORT/"
fi
# The fake OpenID Provider, on the load's CPU like the upstream: its work
# is not tokenjar's. Its first line out is the access token it hands out.
if [ -n "$OIDC" ]; then
    "${LOAD_CPU[@]}" "$OIDC_BENCH" provider "$PROVIDER_PORT" > "$work/provider.out" &
    pids+=($!)
    wait_http "http://127.0.0.1:$PROVIDER_PORT/.well-known/openid-configuration"
fi

# Each wrk run gets freshly started proxies (same key, so the sealed cookie
# stays valid): a proxy's peak RSS is then the scenario's own, not what the
# allocator kept from the scenario before.
KEY=$("$BIN" keygen)
TOKENJAR_PID=
NGINX_MASTER=
NGINX_WORKER=
stop() {
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
# start_tokenjar [BINARY] [MODE]: with "tls", tokenjar terminates TLS itself
# (server.tls_cert_file) on its TLS port; with "https-upstream", it calls
# the upstream's https port, trusting the bench CA (tls.ca_file); with
# "ws", its API is the WebSocket echo API; with "refresh", sessions hold a
# refresh token and are refreshed at the API's /refresh when due; with
# "oidc", it logs in at the fake OpenID Provider (OIDC mode), and is
# waited for until /readyz says the provider is discovered.
start_tokenjar() {
    local bin=${1:-$BIN} port=$TOKENJAR_PORT url extra=() upstream="http://127.0.0.1:$UPSTREAM_PORT"
    [ "${2:-}" = ws ] && upstream="http://127.0.0.1:$WS_PORT"
    stop "$TOKENJAR_PID"
    if [ "${2:-}" = tls ]; then
        port=$TOKENJAR_TLS_PORT
        extra=(TOKENJAR_SERVER__TLS_CERT_FILE="$work/tls.crt" TOKENJAR_SERVER__TLS_KEY_FILE="$work/tls.key")
        url="https://127.0.0.1:$port/healthz"
    else
        url="http://127.0.0.1:$port/healthz"
    fi
    if [ "${2:-}" = https-upstream ]; then
        upstream="https://127.0.0.1:$UPSTREAM_TLS_PORT"
        extra=(TOKENJAR_TLS__CA_FILE="$work/ca.crt")
    fi
    # refresh.leeway_s stays at its default (60 s): the API's tokens come
    # with expiresIn 0, so every request finds its session due.
    if [ "${2:-}" = refresh ]; then
        extra=(TOKENJAR_REFRESH__PATH=/refresh TOKENJAR_TOKEN__REFRESH_FIELD=/refreshToken
            TOKENJAR_TOKEN__EXPIRES_IN_FIELD=/expiresIn)
    fi
    if [ "${2:-}" = redis ]; then
        extra=(TOKENJAR_SESSION__STORE=redis TOKENJAR_SESSION__REDIS_URL="redis://127.0.0.1:$REDIS_PORT")
    fi
    # The provider's tokens last an hour: no refresh during a run.
    if [ "${2:-}" = oidc ]; then
        extra=(TOKENJAR_OIDC__ISSUER="http://127.0.0.1:$PROVIDER_PORT" TOKENJAR_OIDC__CLIENT_ID=tokenjar
            TOKENJAR_OIDC__CLIENT_SECRET=bench-secret
            TOKENJAR_OIDC__REDIRECT_URL="http://127.0.0.1:$TOKENJAR_PORT/api/callback")
    fi
    env TOKENJAR_SERVER__PORT="$port" TOKENJAR_SERVER__WORKERS=1 \
    TOKENJAR_UPSTREAM__URL="$upstream" "${extra[@]}" \
    TOKENJAR_COOKIE__SECURE=false TOKENJAR_COOKIE__NAME=auth-token TOKENJAR_COOKIE__KEYS="$KEY" RUST_LOG=warn \
        "${PROXY_CPU[@]}" "$bin" serve --config-dir "$work/none" 2>> "$work/tokenjar.log" &
    TOKENJAR_PID=$!
    wait_http "$url"
    if [ "${2:-}" = oidc ]; then wait_ok "http://127.0.0.1:$port/readyz"; fi
}
start_nginx() {
    stop "$NGINX_MASTER"
    "${PROXY_CPU[@]}" nginx -p "$work" -c "$work/nginx-proxy.conf" &
    NGINX_MASTER=$!
    wait_http "http://127.0.0.1:$NGINX_PORT/api/"
    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -n 1)
}
start_tokenjar
start_nginx

# tokenjar's cookie is sealed; nginx's holds the token in clear (it has no crypto).
SEALED=$(curl -s -D - -o /dev/null -H 'x-csrf: 1' -H 'content-type: application/json' -d '{}' \
    "http://127.0.0.1:$TOKENJAR_PORT/api/login" | tr -d '\r' | sed -n 's/^set-cookie: \(auth-token=[^;]*\);.*/\1/Ip')
[ -n "$SEALED" ] || { echo "bench: login through tokenjar gave no cookie" >&2; exit 1; }
echo "$SEALED" | grep -q "$JWT" && { echo "bench: the cookie holds the token in clear!" >&2; exit 1; }
ECHOED=$(curl -s -H "Cookie: $SEALED" "http://127.0.0.1:$TOKENJAR_PORT/api/echo")
echo "$ECHOED" | grep -q "$JWT" || { echo "bench: tokenjar did not pass the token: $ECHOED" >&2; exit 1; }
CLEAR="auth-token=$JWT"
ECHOED=$(curl -s -H "Cookie: $CLEAR" "http://127.0.0.1:$NGINX_PORT/api/echo")
echo "$ECHOED" | grep -q "$JWT" || { echo "bench: nginx did not pass the token: $ECHOED" >&2; exit 1; }

# get-cookie-chunked: a login with the 7 KB token, whose session tokenjar
# splits over auth-token.0, .1, …; every chunk goes back on each request.
# nginx gets the same token in clear in one cookie.
CHUNKED=
case " $SCENARIOS " in
    *" get-cookie-chunked "*)
        CHUNKED=$(curl -s -D - -o /dev/null -H 'x-csrf: 1' -H 'content-type: application/json' -d '{}' \
            "http://127.0.0.1:$TOKENJAR_PORT/api/login?big=1" | tr -d '\r' \
            | sed -n 's/^set-cookie: \(auth-token\.[0-9]*=[^;]*\);.*/\1/Ip' | paste -sd ';' - | sed 's/;/; /g')
        [ -n "$CHUNKED" ] || { echo "bench: the big login through tokenjar gave no chunked cookie" >&2; exit 1; }
        ECHOED=$(curl -s -H "Cookie: $CHUNKED" "http://127.0.0.1:$TOKENJAR_PORT/api/echo")
        echo "$ECHOED" | grep -q "$BIGJWT" || { echo "bench: tokenjar did not pass the big token" >&2; exit 1; }
        echo "bench: the chunked session is $(echo "$CHUNKED" | tr ';' '\n' | wc -l) cookies, ${#CHUNKED} bytes" >&2 ;;
esac

# refresh: REFRESH_SESSIONS logins through tokenjar configured for refresh,
# each with a refresh token of its own, their cookies one a line for
# bench/refresh.lua. tokenjar shares a refresh among the requests of one
# refresh token in flight together; with 1,024 sessions taken in turn by 64
# connections, a request would have to stay in flight while 1,024 others
# start to meet another of its session. nginx gets as many refresh tokens
# in clear (it checks none: the API's refresh answers any).
REFRESH_SESSIONS=1024
case " $SCENARIOS " in
    *" refresh "*)
        start_tokenjar "$BIN" refresh
        python3 - "$TOKENJAR_PORT" "$REFRESH_SESSIONS" "$work/refresh-tokenjar.txt" "$work/refresh-nginx.txt" <<'PY'
import http.client, secrets, sys
port, n, tokenjar_path, nginx_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port)
with open(tokenjar_path, "w") as tokenjar, open(nginx_path, "w") as nginx:
    for _ in range(n):
        conn.request("POST", "/api/login?refresh=1", body="{}",
                     headers={"x-csrf": "1", "content-type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        cookies = [v.split(";")[0] for k, v in answer.getheaders()
                   if k.lower() == "set-cookie" and v.startswith("auth-token=")]
        if answer.status != 200 or len(cookies) != 1:
            sys.exit(f"bench: the refresh login through tokenjar gave {answer.status}, cookies {cookies}")
        tokenjar.write(cookies[0] + "\n")
        nginx.write(f"auth-refresh=bench-{secrets.token_hex(16)}\n")
PY
        # Both proxies must send the API the refreshed token, not the login's.
        ECHOED=$(curl -s -H "Cookie: $(head -n 1 "$work/refresh-tokenjar.txt")" "http://127.0.0.1:$TOKENJAR_PORT/api/echo")
        echo "$ECHOED" | grep -q "$JWT2" || { echo "bench: tokenjar did not refresh: $ECHOED" >&2; exit 1; }
        ECHOED=$(curl -s -H "Cookie: $(head -n 1 "$work/refresh-nginx.txt")" "http://127.0.0.1:$NGINX_REFRESH_PORT/api/echo")
        echo "$ECHOED" | grep -q "$JWT2" || { echo "bench: nginx did not refresh: $ECHOED" >&2; exit 1; }
        start_tokenjar ;;
esac

# get-cookie-oidc: one login through tokenjar in OIDC mode and the fake
# provider, whose session (access and refresh token, the ID token's
# profile) tokenjar seals over auth-token.0, .1, …; nginx gets the same
# access token in clear in one cookie. oidc-login only needs tokenjar to
# log in at all: checked here once, before any round.
OIDC_COOKIE=
OIDC_ACCESS=
if [ -n "$OIDC" ]; then
    OIDC_ACCESS=$(head -n 1 "$work/provider.out")
    [ -n "$OIDC_ACCESS" ] || { echo "bench: the provider printed no access token" >&2; exit 1; }
    start_tokenjar "$BIN" oidc
    OIDC_COOKIE=$("$OIDC_BENCH" login "http://127.0.0.1:$TOKENJAR_PORT") \
        || { echo "bench: the OIDC login through tokenjar failed" >&2; exit 1; }
    echo "$OIDC_COOKIE" | grep -q "$OIDC_ACCESS" && { echo "bench: the OIDC cookie holds the token in clear!" >&2; exit 1; }
    ECHOED=$(curl -s -H "Cookie: $OIDC_COOKIE" "http://127.0.0.1:$TOKENJAR_PORT/api/echo")
    echo "$ECHOED" | grep -q "$OIDC_ACCESS" || { echo "bench: tokenjar did not pass the provider's token: $ECHOED" >&2; exit 1; }
    ECHOED=$(curl -s -H "Cookie: auth-token=$OIDC_ACCESS" "http://127.0.0.1:$NGINX_PORT/api/echo")
    echo "$ECHOED" | grep -q "$OIDC_ACCESS" || { echo "bench: nginx did not pass the provider's token" >&2; exit 1; }
    echo "bench: the OIDC session is $(echo "$OIDC_COOKIE" | tr ';' '\n' | wc -l) cookies, ${#OIDC_COOKIE} bytes" \
        "(access token ${#OIDC_ACCESS} bytes)" >&2
    start_tokenjar
fi

# get-cookie-redis: a Redis of its own (persistence off) on the load's
# CPU like the upstream, and one login through tokenjar with sessions in
# it; nginx gets the plain GET's clear cookie, as in get-cookie.
REDIS_COOKIE=
case " $SCENARIOS " in
    *" get-cookie-redis "*)
        need redis-server redis-server
        need redis-cli redis-server
        "${LOAD_CPU[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            > "$work/redis.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 1 200); do redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1 && break; sleep 0.05; done
        start_tokenjar "$BIN" redis
        REDIS_COOKIE=$(curl -s -D - -o /dev/null -H 'x-csrf: 1' -H 'content-type: application/json' -d '{}' \
            "http://127.0.0.1:$TOKENJAR_PORT/api/login" | tr -d '\r' | sed -n 's/^set-cookie: \(auth-token=[^;]*\);.*/\1/Ip')
        [ -n "$REDIS_COOKIE" ] || { echo "bench: the login with sessions in Redis gave no cookie" >&2; exit 1; }
        ECHOED=$(curl -s -H "Cookie: $REDIS_COOKIE" "http://127.0.0.1:$TOKENJAR_PORT/api/echo")
        echo "$ECHOED" | grep -q "$JWT" || { echo "bench: tokenjar with Redis did not pass the token: $ECHOED" >&2; exit 1; }
        # Sizing (docs/deploy.md): Redis's own count of the bytes one
        # session takes, for this small token and for the 7 KB one.
        curl -s -o /dev/null -H 'x-csrf: 1' -H 'content-type: application/json' -d '{}' \
            "http://127.0.0.1:$TOKENJAR_PORT/api/login?big=1"
        for key in $(redis-cli -p "$REDIS_PORT" --scan); do
            echo "bench: Redis key ${key%%:*}:…${key: -6}: $(redis-cli -p "$REDIS_PORT" strlen "$key") bytes of value," \
                "$(redis-cli -p "$REDIS_PORT" memory usage "$key") bytes in Redis's memory" >&2
        done
        echo "bench: the cookie with sessions in Redis is ${#REDIS_COOKIE} bytes" >&2
        redis-cli -p "$REDIS_PORT" flushall > /dev/null
        start_tokenjar "$BIN" redis
        REDIS_COOKIE=$(curl -s -D - -o /dev/null -H 'x-csrf: 1' -H 'content-type: application/json' -d '{}' \
            "http://127.0.0.1:$TOKENJAR_PORT/api/login" | tr -d '\r' | sed -n 's/^set-cookie: \(auth-token=[^;]*\);.*/\1/Ip')
        start_tokenjar ;;
esac
# Commands Redis has run so far (its INFO stats).
redis_commands() {
    redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'
}

# tokenjar_refreshes_total{result="RESULT"} on tokenjar's /metrics (0 before any).
refreshes() {
    curl -s "http://127.0.0.1:$TOKENJAR_PORT/metrics" \
        | awk -v want="tokenjar_refreshes_total{result=\"$1\"}" '$1 == want {n = $2} END {print n + 0}'
}

ticks() { # utime + stime of the given processes, in clock ticks
    local total=0
    for p in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Peak RSS of one scenario: writing 5 to clear_refs resets VmHWM to the
# current RSS (Linux 4.0+), so each run's peak is its own.
reset_hwm() { for p in "$@"; do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done; }
sum_hwm() { local total=0; for p in "$@"; do total=$((total + $(hwm "$p"))); done; echo "$total"; }
CLK_TCK=$(getconf CLK_TCK)

results="$work/results.tsv"
: > "$results"

# run SCENARIO TARGET ROUND: one wrk run, one line of results.
run() {
    local scenario=$1 target=$2 round=$3 port cookie procs args=()
    if [ "$target" = nginx ]; then
        port=$NGINX_PORT cookie=$CLEAR
    else
        port=$TOKENJAR_PORT cookie=$SEALED
    fi
    local url="http://127.0.0.1:$port/api/echo" conns=$CONNS tls='' script_args=()
    case $scenario in
        tls-listener | tls-handshake)
            # The build before this scenario existed cannot listen with TLS.
            [ "$target" = base ] && return 0
            tls=tls
            if [ "$target" = nginx ]; then port=$NGINX_TLS_PORT; else port=$TOKENJAR_TLS_PORT; fi
            url="https://127.0.0.1:$port/api/echo"
            args=(-H "Cookie: $cookie")
            # A new connection, so a full handshake, for every request.
            [ "$scenario" = tls-handshake ] && args+=(-H "Connection: close") ;;
        get-cookie) args=(-H "Cookie: $cookie") ;;
        get-cookie-https)
            # The build before outbound https cannot call an https API.
            [ "$target" = base ] && return 0
            tls=https-upstream
            [ "$target" = nginx ] && port=$NGINX_HTTPS_UP_PORT
            url="http://127.0.0.1:$port/api/echo"
            args=(-H "Cookie: $cookie") ;;
        get-cookie-chunked)
            # The build before chunked sessions cannot hold a 7 KB token.
            [ "$target" = base ] && return 0
            if [ "$target" = nginx ]; then args=(-H "Cookie: auth-token=$BIGJWT"); else args=(-H "Cookie: $CHUNKED"); fi ;;
        refresh)
            # The build before refresh cannot refresh.
            [ "$target" = base ] && return 0
            tls=refresh
            args=(-s bench/refresh.lua)
            if [ "$target" = nginx ]; then
                port=$NGINX_REFRESH_PORT
                script_args=(-- "$work/refresh-nginx.txt")
            else
                script_args=(-- "$work/refresh-tokenjar.txt")
            fi
            url="http://127.0.0.1:$port/api/echo" ;;
        get-cookie-oidc)
            # The build before OIDC mode cannot log in at a provider.
            [ "$target" = base ] && return 0
            tls=oidc
            if [ "$target" = nginx ]; then args=(-H "Cookie: auth-token=$OIDC_ACCESS"); else args=(-H "Cookie: $OIDC_COOKIE"); fi ;;
        oidc-login)
            # nginx cannot do an OIDC login, nor can the build before OIDC mode.
            [ "$target" = tokenjar ] || return 0
            tls=oidc ;;
        get-cookie-redis)
            # The build before session stores keeps sessions in the cookie.
            [ "$target" = base ] && return 0
            if [ "$target" = nginx ]; then
                args=(-H "Cookie: $CLEAR")
            else
                tls=redis
                args=(-H "Cookie: $REDIS_COOKIE")
            fi ;;
        get-nocookie) ;;
        post-64k) args=(-H "Cookie: $cookie" -s bench/post.lua) ;;
        post-1m) args=(-H "Cookie: $cookie" -s bench/post-1m.lua); url="http://127.0.0.1:$port/api/upload" ;;
        download-100m) args=(-H "Cookie: $cookie"); url="http://127.0.0.1:$port/api/big"; conns=4 ;;
        login)
            [ "$target" = nginx ] && return 0 # nginx cannot take a token out of JSON
            args=(-s bench/login.lua); url="http://127.0.0.1:$port/api/login" ;;
        websocket)
            # The build before WebSockets cannot relay them.
            [ "$target" = base ] && return 0
            tls=ws ;;
    esac
    if [ "$target" = nginx ]; then
        start_nginx
        procs=("$NGINX_MASTER" "$NGINX_WORKER")
    else
        if [ "$target" = base ]; then start_tokenjar "$BENCH_BASE"; else start_tokenjar "$BIN" "$tls"; fi
        procs=("$TOKENJAR_PID")
    fi
    # drive SECONDS: the load, wrk's or (websocket, oidc-login) ws-bench's
    # or oidc-bench's, which print wrk's summary lines.
    drive() {
        if [ "$scenario" = websocket ]; then
            "${LOAD_CPU[@]}" "$WS_BENCH" load "ws://127.0.0.1:$port/api/ws" "http://127.0.0.1:$port" \
                "$cookie" "$conns" "$1" 128
        elif [ "$scenario" = oidc-login ]; then
            "${LOAD_CPU[@]}" "$OIDC_BENCH" logins "http://127.0.0.1:$port" "$conns" "$1"
        else
            "${LOAD_CPU[@]}" wrk -t1 -c"$conns" -d"$1s" --latency "${args[@]}" "$url" "${script_args[@]}"
        fi
    }
    # One second of the same load first: connection pools and caches filled.
    drive 1 > /dev/null
    local before after out refreshed='' ok reused
    # refresh: tokenjar's own count of the refreshes it made (ok) and
    # handed on from another request (reused) during the measured run.
    [ "$scenario" = refresh ] && [ "$target" = tokenjar ] && refreshed="$(refreshes ok) $(refreshes reused)"
    local commands=''
    [ "$scenario" = get-cookie-redis ] && [ "$target" = tokenjar ] && commands=$(redis_commands)
    reset_hwm "${procs[@]}"
    before=$(ticks "${procs[@]}")
    out=$(drive "$DURATION")
    after=$(ticks "${procs[@]}")
    echo "$out" > "$work/wrk-$scenario-$target-$round.txt"
    if [ -n "$commands" ]; then
        local served
        served=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
        python3 -c "import sys; c, r = int(sys.argv[1]), int(sys.argv[2]); print(f'bench: round $round get-cookie-redis: {c} Redis commands for {r} requests, {c / max(r, 1):.2f} per request')" \
            "$(($(redis_commands) - commands))" "$served" >&2
    fi
    if [ -n "$refreshed" ]; then
        read -r ok reused <<< "$refreshed"
        echo "bench: round $round refresh tokenjar: $(($(refreshes ok) - ok)) refreshes made," \
            "$(($(refreshes reused) - reused)) shared, for $(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p') requests" >&2
    fi
    python3 - "$scenario" "$target" "$round" "$((after - before))" "$CLK_TCK" "$(sum_hwm "${procs[@]}")" \
        >> "$results" <<PY
import re, sys
scenario, target, rnd, ticks, clk, peak_kib = sys.argv[1:]
out = """$out"""
if not re.search(r"Requests/sec", out): sys.exit("bench: wrk printed no result:\n" + out)
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m: sys.exit(f"bench: unreadable latency {v!r} in:\n{out}")
    n, unit = m.groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
errors = 0
socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
if socket:
    errors += sum(int(x) for x in socket.groups())
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if non2xx:
    errors += int(non2xx.group(1))
cpu_us = int(ticks) * 1e6 / int(clk) / max(reqs, 1)
print(f"{scenario}\t{target}\t{rnd}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{cpu_us:.2f}\t{reqs}\t{errors}\t{peak_kib}")
PY
    echo "bench: round $round $scenario $target: $(tail -n 1 "$results" | cut -f4) req/s" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        # Interleaved, and the order alternates, so neither proxy always runs first.
        if [ -n "${BENCH_BASE:-}" ]; then
            case $((round % 3)) in
                1) order="tokenjar base nginx" ;;
                2) order="nginx tokenjar base" ;;
                *) order="base nginx tokenjar" ;;
            esac
        elif [ $((round % 2)) -eq 1 ]; then order="tokenjar nginx"; else order="nginx tokenjar"; fi
        for target in $order; do run "$scenario" "$target" "$round"; done
    done
done

python3 - "$results" "$ROUNDS" "$DURATION" "$CONNS" "$PINNING" <<'PY'
import statistics, sys
path, rounds, duration, conns, pinning = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
med = {}
for scen in dict.fromkeys(r[0] for r in rows):
    for target in ("tokenjar", "base", "nginx"):
        rs = [r for r in rows if r[0] == scen and r[1] == target]
        if rs:
            med[scen, target] = {
                "rps": statistics.median(float(r[3]) for r in rs),
                "p50": statistics.median(float(r[4]) for r in rs),
                "p99": statistics.median(float(r[5]) for r in rs),
                "cpu": statistics.median(float(r[6]) for r in rs),
                "errors": sum(int(r[8]) for r in rs),
                "rss": statistics.median(int(r[9]) for r in rs) / 1024,
            }
print(f"\n{rounds} interleaved rounds × {duration} s, wrk -t1 -c{conns} (downloads: -c4), medians; {pinning}\n")
print("| scenario | proxy | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | errors |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for (scen, target), m in med.items():
    print(f"| {scen} | {target} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.1f} | {m['rss']:.1f} | {m['errors']} |")
print()
print("| scenario | req/s tokenjar/nginx | CPU/req tokenjar/nginx | p99 tokenjar/nginx | peak RSS tokenjar/nginx |")
print("| --- | ---: | ---: | ---: | ---: |")
for scen in dict.fromkeys(s for s, _ in med):
    for target, label in (("base", " (base)"), ("tokenjar", "")):
        t, n = med.get((scen, target)), med.get((scen, "nginx"))
        if t and n:
            print(f"| {scen}{label} | {t['rps'] / n['rps']:.3f} | {t['cpu'] / n['cpu']:.2f} | {t['p99'] / n['p99']:.2f} | {t['rss'] / n['rss']:.2f} |")
# Before/after: each round's ratio to nginx, so that the machine's drift
# between rounds cancels out; the median of those.
if any(r[1] == "base" for r in rows):
    print()
    print("| scenario | req/s ratio to nginx, base | tokenjar | change (median of rounds) |")
    print("| --- | ---: | ---: | ---: |")
    for scen in dict.fromkeys(r[0] for r in rows):
        per_round = {}
        for r in rows:
            if r[0] == scen:
                per_round.setdefault(r[2], {})[r[1]] = float(r[3])
        ratios = [(v["base"] / v["nginx"], v["tokenjar"] / v["nginx"]) for v in per_round.values()
                  if {"base", "tokenjar", "nginx"} <= v.keys()]
        if ratios:
            b = statistics.median(x for x, _ in ratios)
            t = statistics.median(y for _, y in ratios)
            change = statistics.median(y / x - 1 for x, y in ratios)
            print(f"| {scen} | {b:.3f} | {t:.3f} | {change:+.1%} |")
# What a refresh adds to the request that waits for it: the same proxy's
# cookie GET without one, from the same run.
for target in ("tokenjar", "nginx"):
    r, g = med.get(("refresh", target)), med.get(("get-cookie", target))
    if r and g:
        print(f"\nrefresh, {target}: p50 {r['p50']:.2f} ms against get-cookie's {g['p50']:.2f} (+{r['p50'] - g['p50']:.2f}),"
              f" p99 {r['p99']:.2f} against {g['p99']:.2f} (+{r['p99'] - g['p99']:.2f}),"
              f" CPU {r['cpu']:.1f} µs/req against {g['cpu']:.1f}")
# What an OIDC session (a provider's access token, a refresh token and a
# profile, over several cookies) costs a GET: the same proxy's one-cookie
# GET from the same run.
for target in ("tokenjar", "nginx"):
    o, g = med.get(("get-cookie-oidc", target)), med.get(("get-cookie", target))
    if o and g:
        print(f"\nget-cookie-oidc, {target}: CPU {o['cpu']:.1f} µs/req against get-cookie's {g['cpu']:.1f}"
              f" (+{o['cpu'] - g['cpu']:.1f}), p99 {o['p99']:.2f} ms against {g['p99']:.2f}")
# What keeping sessions in Redis costs a GET: the cookie store's GET from
# the same run.
r, g = med.get(("get-cookie-redis", "tokenjar")), med.get(("get-cookie", "tokenjar"))
if r and g:
    print(f"\nget-cookie-redis, tokenjar: {r['rps']:.0f} req/s against the cookie store's {g['rps']:.0f};"
          f" p50 {r['p50']:.2f} ms against {g['p50']:.2f} (+{r['p50'] - g['p50']:.2f}),"
          f" p99 {r['p99']:.2f} against {g['p99']:.2f} (+{r['p99'] - g['p99']:.2f}),"
          f" CPU {r['cpu']:.1f} µs/req against {g['cpu']:.1f} (Redis's own CPU is on the load's core)")
# A whole OIDC login against the plain login (an API's JSON answer sealed):
# the provider's round trip, the ID token's signature and the larger
# session, in tokenjar's CPU (the provider's own is on the load's CPU).
o, l = med.get(("oidc-login", "tokenjar")), med.get(("login", "tokenjar"))
if o:
    print(f"\noidc-login: a request is one whole login (login route, provider, callback); no nginx peer"
          f" (nginx cannot do an OIDC login); CPU µs/req is tokenjar's alone, the provider's is on the load's CPU")
    if l:
        print(f"oidc-login, tokenjar: {o['cpu']:.1f} µs CPU per login against the plain login's {l['cpu']:.1f}")
print("\npeak RSS: VmHWM of a freshly started proxy during one wrk run after a 1 s warm-up; nginx's master + worker")
PY
