# tokenjar's everyday commands. `make run` and `make test` are all a new
# checkout needs (with a Rust toolchain).

CARGO ?= cargo

.PHONY: run serve test lint fmt build release bench soak clean

## The demo: tokenjar in front of an embedded demo API, with a demo page.
run:
	$(CARGO) run -p tokenjar -- demo --config-dir config

## tokenjar alone, with config/ (TOKENJAR_ENV=local: plain-http cookies).
serve:
	$(CARGO) run -p tokenjar -- serve --config-dir config

## Every test: unit, flow (in-memory) and end-to-end (the binary on loopback).
## The end-to-end tests build the tokenjar binary themselves (tests/support/
## binary.rs). The open-files limit goes up to the hard limit first: one
## endurance test holds 10,000 connections.
test:
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; $(CARGO) test --workspace

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
