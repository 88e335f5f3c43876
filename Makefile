# The two entry points of the README. Both install what a fresh machine lacks
# (scripts/bootstrap.sh) and build with one cargo command shape, so RocksDB's
# C++ is compiled once per target dir and shared by `run` and `test`.

CARGO ?= cargo
# One build command for everything: binaries and tests share features and profile.
BUILD = $(CARGO) build --workspace --bins --tests
TARGET_DIR = $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
CONFIG ?= cluster.toml

.PHONY: run test build bootstrap lint fuzz-seeds fuzz bench

bootstrap:
	@bash scripts/bootstrap.sh

build: bootstrap
	$(BUILD)

## Run the default one-node cluster (all five roles on 127.0.0.1:4433).
run: build
	$(TARGET_DIR)/debug/mlsd run --config $(CONFIG)

## Run every test (unit, multi-process, end-to-end) in the same profile as `run`.
test: build
	$(CARGO) test --workspace --no-fail-fast

## fmt and clippy as required before each commit (clippy builds RocksDB once more in check mode).
lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Rewrite fuzz/corpus from a real run (frames, envelopes, MLS messages).
fuzz-seeds: build
	$(CARGO) test --test fuzz_seeds -- --ignored

## Fuzz every target for FUZZ_SECONDS each (needs the nightly toolchain and cargo-fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && for t in frame requests envelope mls_framing; do \
		mkdir -p work/$$t && \
		cargo +nightly fuzz run -O $$t work/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; \
	done

## The benchmark in the release profile (one more RocksDB C++ build, in target/release).
bench:
	@bash scripts/bootstrap.sh
	$(CARGO) run --release -p mlsd --bin mlsd -- bench $(BENCH_ARGS)
