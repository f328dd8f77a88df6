# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it needs.
.PHONY: demo test bench lint deps deps-browser

CARGO ?= cargo

deps:
	@tools/install-deps.sh

deps-browser:
	@tools/install-deps.sh browser

## The whole appliance on loopback: managed Redis, two example ports, admin API.
demo: deps
	$(CARGO) run --release -- demo

## Every test: unit, integration against real redis-server, the real binary.
test: deps-browser
	$(CARGO) build --examples
	$(CARGO) test --lib --bins --tests

## Ingest, end to end, CPU and memory, the log at 1M records, APNs beside FCM, urgent latency
## under a 1M bulk drain at the rate cap, ingest with the ad gate and receipts; written to stdout
## (and target/bench/*.json).
bench: deps
	$(CARGO) build --release --bin pushgate
	$(CARGO) run --release --example bench

## What every commit must pass.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
