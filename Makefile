# weft: build, test and demo. Tests and the demo create network namespaces, so they need root
# (design.md §3); `deps` installs the Debian packages they drive.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# rustup installs cargo here, and non-login shells (CI, sudo) often lack it on PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
# libc6-dev has libc.a, which weftd is linked with (.cargo/config.toml). iptables brings
# ip6tables too (the IPv6 rules and tests/ip6tables.rs); dnsmasq-base is the "outside" resolver
# of tests/names_dns.rs.
DEB_PACKAGES := libc6-dev etcd-server etcd-client iproute2 iptables iputils-ping protobuf-compiler libprotobuf-dev ruby docker.io busybox-static openssl dnsmasq-base
# Integration tests each run etcd and several daemons; more threads mostly adds contention.
TEST_THREADS ?= 2
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps build test demo clean

all: build

## deps: install the Debian packages that are missing (apt-get update only if needed)
deps:
	@missing=""; \
	for pkg in $(DEB_PACKAGES); do \
	  dpkg -s "$$pkg" 2>/dev/null | grep '^Status: install ok installed' >/dev/null || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found (looked in PATH and ~/.cargo/bin); install Rust with rustup" >&2; exit 1; }
	@PATH="$$PATH:/usr/sbin:/sbin" command -v ip6tables >/dev/null || { echo "ip6tables not found; Debian's iptables package provides it (check update-alternatives --display ip6tables)" >&2; exit 1; }

## build: every target (lib, weftd, tests, examples) of the workspace (weft and its test lab)
build:
	$(CARGO) build --workspace --all-targets

## test: formatting, then unit and integration tests; fails if any check fails
test: deps
	$(CARGO) fmt --all --check
	$(CARGO) test --workspace --all-targets --no-fail-fast -- --test-threads=$(TEST_THREADS) --show-output

## demo: two hosts in namespaces, each with weftd --names and its own dockerd; containers ping
## and fetch a page across hosts by IP and by name (DEMO_KEEP=1 to look around)
demo: deps
	$(CARGO) build --bins --examples
	$(CARGO) run --example demo

clean:
	$(CARGO) clean

## bench: benchmarks of issues 6, 15 and 16 (root, a few minutes): builds release, prints one line
## per figure, writes CSVs and PNGs to bench-results/. BENCH=convergence,propagation,propagation6,scale,
## scale6,idle,datapath,names runs a subset (default all); BENCH_OUT, BENCH_TRIALS, BENCH_PUTS, BENCH_SCALE_K,
## BENCH_NAMES, ... see examples/bench/main.rs.
BENCH_DEB_PACKAGES := iperf3 python3-matplotlib ethtool
.PHONY: bench
bench: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"
	$(CARGO) build --release --bins --examples
	$(CARGO) run --release --example bench
