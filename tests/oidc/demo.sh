#!/usr/bin/env bash
# `make run-oidc`: tokenjar's demo in OIDC mode (SPEC §16). Starts the test
# OpenID Provider (provider.mjs, npm's oidc-provider) on loopback, then
# `tokenjar demo` logging users in there. The page is opened at
# http://localhost:PORT (not 127.0.0.1, which the provider uses, so that the
# two keep their cookies apart). Both stop with Ctrl-C.
#
#   PORT=8080 PROVIDER_PORT=8081 tests/oidc/demo.sh
#
# The provider takes any user name and password. Its access tokens live
# ACCESS_TOKEN_TTL seconds (default 120), so tokenjar's refresh shows.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${PORT:-8080}
PROVIDER_PORT=${PROVIDER_PORT:-8081}
ACCESS_TOKEN_TTL=${ACCESS_TOKEN_TTL:-120}
CARGO=${CARGO:-cargo}
ORIGIN="http://localhost:$PORT"
ISSUER="http://127.0.0.1:$PROVIDER_PORT"

command -v node > /dev/null || {
    echo "run-oidc: Node.js 20 or later is missing (apt-get install nodejs npm, then make oidc-deps)" >&2
    exit 1
}
[ -d tests/oidc/node_modules/oidc-provider ] || {
    echo "run-oidc: the test provider's packages are missing: make oidc-deps" >&2
    exit 1
}

# Built first, so the provider is not kept waiting on a compile.
"$CARGO" build -p tokenjar

# A coprocess: its stdin is a pipe this shell holds open. The provider exits
# when that pipe closes, so it never outlives the demo, however this script
# ends (Ctrl-C reaches both; bash closes the pipe for any child it execs, so
# tokenjar runs as a child, not in this shell's place).
coproc PROVIDER {
    OIDC_PORT=$PROVIDER_PORT \
        OIDC_CLIENT_ID=tokenjar-demo \
        OIDC_CLIENT_SECRET=tokenjar-demo-secret \
        OIDC_REDIRECT_URIS="$ORIGIN/api/callback" \
        OIDC_POST_LOGOUT_REDIRECT_URIS="$ORIGIN/" \
        OIDC_ACCESS_TOKEN_TTL=$ACCESS_TOKEN_TTL \
        exec node tests/oidc/provider.mjs
}
read -r ready <&"${PROVIDER[0]}" || {
    echo "run-oidc: the provider did not start (is port $PROVIDER_PORT free? PROVIDER_PORT=… picks another)" >&2
    exit 1
}
echo "run-oidc: OpenID Provider ${ready#listening }" >&2

export TOKENJAR_SERVER__PORT=$PORT \
    TOKENJAR_OIDC__ISSUER=$ISSUER \
    TOKENJAR_OIDC__CLIENT_ID=tokenjar-demo \
    TOKENJAR_OIDC__CLIENT_SECRET=tokenjar-demo-secret \
    TOKENJAR_OIDC__REDIRECT_URL="$ORIGIN/api/callback" \
    TOKENJAR_OIDC__POST_LOGOUT_REDIRECT_URL="$ORIGIN/"
"$CARGO" run -p tokenjar -- demo --config-dir config
