# tokengate's container image: one static binary on distroless, as non-root.
#
#   make image                      # docker or podman; VERSION, COMMIT and IMAGE from git
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) -t tokengate .
#
#   docker run -v ./tokengate.yaml:/etc/tokengate/tokengate.yaml:ro -p 9191:9191 -p 8181:8181 tokengate
#
# The configuration is not in the image: mount it at /etc/tokengate/tokengate.yaml
# (TOKENGATE_CONFIG) and have it listen beyond loopback, as envoy/tokengate.compose.yaml does:
#   listen: {grpc: "0.0.0.0:9191", http: "0.0.0.0:8181"}
# tokengate's defaults are loopback-only, and a container's loopback is its own.
# See the README's "Container image".

# The build stage runs on the build machine's platform and cross-compiles to
# the target's (TARGETOS, TARGETARCH: set by BuildKit and podman for
# --platform), so a multi-platform build runs no emulated compiler.
# Go: at least go.mod's go line (cmd/tokengate's TestDockerfile checks it).
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
# The modules first: a layer that changes only with go.mod and go.sum.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
# The same script, with the same flags, as `make release`: CGO_ENABLED=0,
# -trimpath, the version and commit stamped, go build ./cmd/tokengate.
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION COMMIT=$COMMIT sh .ci/build-tokengate /out/tokengate

# distroless static: no shell, no package manager, no libc. It carries the CA
# certificates (/etc/ssl/certs/ca-certificates.crt, for JWKS over https and
# PostgreSQL with sslmode=verify-full), /etc/passwd with the nonroot user
# (65532), tzdata and an empty /tmp; the binary is all this file adds.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokengate /tokengate
# nonroot, by number: Kubernetes' runAsNonRoot can verify only a numeric
# USER ("image has non-numeric user (nonroot), cannot verify user is non-root").
USER 65532:65532
# nonroot's home, writable by it: the embedded store's default storage.path
# (./tokengate-data/tokengate.db) lands here. Mount a volume there to keep it,
# or use PostgreSQL (storage.postgres_url), as replicas must.
WORKDIR /home/nonroot
ENV TOKENGATE_CONFIG=/etc/tokengate/tokengate.yaml
# 9191: Envoy ext_authz (gRPC, listen.grpc). 8181: health, readiness,
# /metrics, webhooks and the admin API (listen.http).
EXPOSE 9191 8181
# No shell or curl here: the binary checks itself. It asks /readyz on
# 127.0.0.1:8181; another listen.http port needs a HEALTHCHECK of its own.
# Kubernetes ignores this and uses the Deployment's probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/tokengate", "healthcheck"]
ENTRYPOINT ["/tokengate"]
CMD ["serve"]
