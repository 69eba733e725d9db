# tokenjar's everyday commands. `make run` and `make test` are all a new
# checkout needs (with a Rust toolchain); `make check` is the quick loop
# while editing.

CARGO ?= cargo

# npm ci's record in node_modules: newer than the lock file once installed.
# Prerequisites are expanded as rules are read, so these come first.
OIDC_MODULES = tests/oidc/node_modules/.package-lock.json
OIDC_DEPS = $(if $(shell command -v npm 2>/dev/null),$(OIDC_MODULES))

.PHONY: run run-oidc serve test check lint fmt build release bench soak clean oidc-deps

## The demo: tokenjar in front of an embedded demo API, with a demo page.
run:
	$(CARGO) run -p tokenjar -- demo --config-dir config

## The demo in OIDC mode: the test OpenID Provider (tests/oidc, needs
## Node.js 20+) and tokenjar logging users in there, at http://localhost:8080.
run-oidc: oidc-deps
	CARGO="$(CARGO)" tests/oidc/demo.sh

## tokenjar alone, with config/ (TOKENJAR_ENV=local: plain-http cookies).
serve:
	$(CARGO) run -p tokenjar -- serve --config-dir config

## Every test: unit, flow (in-memory) and end-to-end (the binary on loopback).
## The end-to-end tests build the tokenjar binary themselves (tests/support/
## binary.rs). The open-files limit goes up to the hard limit first:
## tests/idle_connections.rs holds 10,000 connections.
test: $(OIDC_DEPS)
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; $(CARGO) test --workspace

## The edit-test loop: `make lint`, then every test that needs no browser,
## no nginx and no long run:
## - every test of the crates (unit, integration, in-process, doc tests):
##   all of them, so a new crate test is never left out;
## - the end-to-end targets in CHECK_E2E (tests/Cargo.toml says what each
##   covers).
## Left to `make test`: browser (Chromium), scale and refresh_instances
## (nginx), soak (30 s), idle_connections (10,000 connections, a high
## open-files limit) and websocket_scale (1,000 WebSockets, ~2,500 open
## files). A new quick end-to-end target goes into CHECK_E2E.
CHECK_E2E = proxy auth streaming cli ops frontend answers forwarding lifecycle \
	hostile_cookies hostile_login hostile_requests hostile_forgery \
	api_restart broken_api slow_clients events tls_listener upstream_tls websocket \
	refresh oidc_provider oidc session_store
check: lint $(OIDC_DEPS)
	$(CARGO) test --workspace --exclude tokenjar-e2e
	$(CARGO) test --workspace $(addprefix --test ,$(CHECK_E2E))

## The test OpenID Provider's packages (tests/oidc: npm's oidc-provider,
## for the OIDC tests), installed from the lock file when missing or when the
## lock file changed. `test` and `check` run it when npm is installed
## (OIDC_DEPS above); without Node.js the OIDC tests skip (and fail under
## CI=true).
oidc-deps: $(OIDC_MODULES)
$(OIDC_MODULES): tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund

## Formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## tokenjar vs nginx as cookie → header proxies (needs wrk and nginx).
bench:
	bench/run.sh

## The soak test for 10 minutes against a release build: memory and
## descriptors must stay flat (SOAK_SECONDS, SOAK_RATE to change).
soak:
	CARGO="$(CARGO)" bench/soak.sh

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p tokenjar

clean:
	$(CARGO) clean
