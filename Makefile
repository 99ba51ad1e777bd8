# tokengate's everyday commands. `make bench` is the load benchmark: see
# cmd/tokengate-bench for what it measures and how.

GO          ?= go
CONCURRENCY ?= 32
DURATION    ?= 10s
WARMUP      ?= 2s
ROUNDS      ?= 3
BENCHFLAGS  ?=
# What the release binaries and the image are stamped with.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE       ?= tokengate:$(VERSION)
# docker, else podman; CONTAINER_ENGINE=… chooses.
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64

.PHONY: build test release image bench bench-http bench-propagation bench-ingest bench-soak bench-go

## build: build bin/tokengate
build:
	$(GO) build -o bin/tokengate ./cmd/tokengate

## test: run every test
test:
	$(GO) test -race ./...

## release: the static binaries the image holds, built by the same script
## with the same flags (.ci/build-tokengate), for each of RELEASE_PLATFORMS:
## bin/tokengate-linux-amd64, bin/tokengate-linux-arm64
release:
	@set -e; for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "bin/tokengate-$$os-$$arch"; \
		GO="$(GO)" GOOS=$$os GOARCH=$$arch VERSION="$(VERSION)" COMMIT="$(COMMIT)" \
			.ci/build-tokengate bin/tokengate-$$os-$$arch; \
	done

## image: the container image (Dockerfile), tagged IMAGE, with docker or
## podman (CONTAINER_ENGINE)
image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: no container engine: install docker or podman, or set CONTAINER_ENGINE" >&2; exit 1; }
	$(CONTAINER_ENGINE) build --build-arg VERSION="$(VERSION)" --build-arg COMMIT="$(COMMIT)" -t $(IMAGE) .

## bench: tokengate against a do-nothing ext_authz server under the same gRPC
## load; prints throughput, p50 and p99 of each and their ratios. Takes about
## 2 × ROUNDS × (WARMUP + DURATION). BENCHFLAGS=-json adds a JSON report on stdout.
bench: build
	$(GO) build -o bin/tokengate-bench ./cmd/tokengate-bench
	bin/tokengate-bench -tokengate bin/tokengate -concurrency $(CONCURRENCY) \
		-duration $(DURATION) -warmup $(WARMUP) -rounds $(ROUNDS) $(BENCHFLAGS)

## bench-http: bench over the HTTP authorization endpoint (listen.authz_http,
## envoy mode) against a do-nothing HTTP server, CONCURRENCY keep-alive
## clients; target throughput ≥ 0.80× and p99 ≤ 2× the baseline's.
bench-http: build
	$(GO) build -o bin/tokengate-bench ./cmd/tokengate-bench
	bin/tokengate-bench -protocol http -tokengate bin/tokengate -concurrency $(CONCURRENCY) \
		-duration $(DURATION) -warmup $(WARMUP) -rounds $(ROUNDS) $(BENCHFLAGS)

## bench-propagation: 3 replicas on one throwaway PostgreSQL cluster; 200
## revocations through one of them, each timed until every replica denies;
## prints p50 and p99 against the target p99 ≤ 20ms, and the replicas'
## PostgreSQL connections. BENCHFLAGS as for bench, e.g.
## BENCHFLAGS='-replicas 20 -background 200' (200 revocations/s through one
## more replica meanwhile), '-standby -poll 100ms' (replicas 2… read a
## streaming standby), '-revocations 1000 -json'.
bench-propagation: build
	$(GO) build -o bin/tokengate-bench ./cmd/tokengate-bench
	bin/tokengate-bench propagation -tokengate bin/tokengate $(BENCHFLAGS)

## bench-ingest: 16 concurrent senders, each a closed loop of signed FusionAuth
## webhooks (user.delete) to one tokengate on a throwaway durable PostgreSQL
## cluster; prints events/s, p50 and p99 against the target ≥ 5000 events/s,
## and checks that every applied event was committed. BENCHFLAGS as for bench,
## e.g. BENCHFLAGS='-senders 32 -duration 30s -json'.
bench-ingest: build
	$(GO) build -o bin/tokengate-bench ./cmd/tokengate-bench
	bin/tokengate-bench ingest -tokengate bin/tokengate $(BENCHFLAGS)

## bench-soak: 2 replicas on one throwaway PostgreSQL cluster, cache.max_bytes
## 8 MiB and a pool of 20,000 tokens, under 60s of mixed Checks (valid, junk,
## revoked) while 100 revocations/s stream in through either replica; fails
## on any revoked or junk token allowed, any gRPC error, or a heap over its
## bound. BENCHFLAGS as for bench, e.g. BENCHFLAGS='-duration 10m -json'.
bench-soak: build
	$(GO) build -o bin/tokengate-bench ./cmd/tokengate-bench
	bin/tokengate-bench soak -tokengate bin/tokengate $(BENCHFLAGS)

## bench-go: the Go micro-benchmarks: the Check path, the revocation index
## at 1M entries, and loading 1M revocations from PostgreSQL
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./extauthz/...
	$(GO) test -run '^$$' -bench Revoked -benchmem ./storage
	$(GO) test -run '^$$' -bench IndexMemory -benchtime 1x ./storage
	$(GO) test -run '^$$' -bench Load1M -benchtime 3x ./storage/postgres
