# livetally — the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
KAFKA := deploy/local/kafka.sh
# The broker `make test` starts; one per checkout, on free ports.
TEST_BROKER_DIR ?= target/test-broker

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Check the toolchain (Rust, Java, Maven) and fetch Kafka's jars
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from rustup.rs" >&2; exit 1; }
	@command -v java >/dev/null || { echo "java not found: install a JDK 17+" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven" >&2; exit 1; }
	@$(KAFKA) fetch

.PHONY: build
build: ## Build the livetally binary (release)
	$(CARGO) build --release -p livetally

.PHONY: run
run: ## Run the embedded demo: cluster + traffic + engine + dashboard on http://127.0.0.1:8080/
	$(CARGO) run -p livetally -- demo $(ARGS)

.PHONY: test
test: setup ## Every test: unit, property and integration tests against a real Kafka broker
	$(CARGO) build --workspace --all-targets
	@set -euo pipefail; \
	rm -rf $(TEST_BROKER_DIR); \
	brokers=$$($(KAFKA) start $(TEST_BROKER_DIR) | tail -n 1); \
	trap '$(KAFKA) stop $(TEST_BROKER_DIR) >/dev/null 2>&1 || true' EXIT; \
	echo "test broker: $$brokers"; \
	LIVETALLY_TEST_BROKERS=$$brokers $(CARGO) test --workspace --all-targets

.PHONY: soak
soak: setup ## Long runs: the exactly-once crash test with 1 million records (about 5 minutes)
	$(CARGO) build -p livetally --tests
	@set -euo pipefail; \
	rm -rf target/soak-broker; \
	brokers=$$($(KAFKA) start target/soak-broker | tail -n 1); \
	trap '$(KAFKA) stop target/soak-broker >/dev/null 2>&1 || true' EXIT; \
	LIVETALLY_TEST_BROKERS=$$brokers LIVETALLY_SOAK_EVENTS=1000000 $(CARGO) test -p livetally --test exactly_once -- --nocapture

.PHONY: test-unit
test-unit: ## Unit and property tests only (no broker)
	$(CARGO) test --workspace --lib --bins

.PHONY: lint
lint: ## rustfmt and clippy, as CI would
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: bench
bench: ## Criterion benches of the hot path, each beside its limit
	$(CARGO) bench -p livetally-benches

.PHONY: bench-memory
bench-memory: ## Memory per live and per ended stream, state and read model, at 1 M streams (ARGS="--streams 100000" runs fewer)
	$(CARGO) run --release -p livetally-benches --example memory -- $(if $(ARGS),$(ARGS),--streams 1000000 --malloc-trim)

.PHONY: bench-e2e
bench-e2e: ## End-to-end catch-up throughput and latency vs bare consumer and Kafka Streams (ARGS=--smoke for a tiny run)
	python3 benches/e2e/run.py $(ARGS)

.PHONY: bench-restore
bench-restore: setup ## Restore time per partition from the changelog (own broker; ARGS="EVENTS STREAMS")
	benches/restore/run.sh $(ARGS)

.PHONY: broker-start
broker-start: setup ## Start a local Kafka broker in target/dev-broker (prints its address)
	@$(KAFKA) start target/dev-broker

.PHONY: broker-stop
broker-stop: ## Stop the local Kafka broker
	@$(KAFKA) stop target/dev-broker

.PHONY: clean
clean: ## Remove build output and local brokers
	-@$(KAFKA) stop $(TEST_BROKER_DIR) >/dev/null 2>&1
	-@$(KAFKA) stop target/dev-broker >/dev/null 2>&1
	$(CARGO) clean
