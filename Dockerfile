# syntax=docker/dockerfile:1.7
#
# cpc-rules: the gRPC decision server, with the bundled rules.
#
#   docker build -t cpc-rules .
#   docker run --rm -p 50051:50051 -e CPC_ALLOW_PLAINTEXT=true cpc-rules
#
# Ports: 50051 gRPC (decisions, rules, grpc.health.v1 and reflection); 9464 Prometheus
# metrics (GET /metrics, plain HTTP). The image runs as an unprivileged user whose one writable
# path is the decision record's folder, /var/lib/cpc-rules (mount a volume there, or use
# PostgreSQL), so it runs with a read-only root filesystem. The bundled rules are at
# /srv/cpc-rules/rules: mount another rules folder over it (read-only is fine) to replace them
# (no VOLUME is declared, so Docker makes no anonymous volume for it).
# See docs/production.md.

ARG RUST_VERSION=1.95.0

# ---- build: the release binary from the locked dependencies --------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Only the server crate: the workspace's bench crate (criterion, regorus) is never compiled.
# The bundled rules are checked and their test cases run, so a broken rule fails the build.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p cpc-rules \
 && ./target/release/cpc-rules test --rules rules \
 && install -D -m 0555 target/release/cpc-rules /out/cpc-rules \
 && install -d -m 0700 /out/record

# ---- run: glibc and libgcc only, no shell, no package manager ------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="cpc-rules" \
      org.opencontainers.image.description="Decision engine for child protection conferences in England, served over gRPC" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/cpc-rules /usr/local/bin/cpc-rules
# Owned by root and not writable by the server's user: rules change by replacing the mount.
COPY --from=build --chown=0:0 /src/rules /srv/cpc-rules/rules
# The decision record (docs/record.md): a SQLite file here by default, the one path the server's
# user may write. Mount a volume on it to keep the record, or set CPC_RECORD to a PostgreSQL URL
# (CPC_RECORD_URL_FILE to read it from a file) for several replicas.
COPY --from=build --chown=65532:65532 /out/record /var/lib/cpc-rules
# Every serve flag has a CPC_* variable; these make the container listen on all interfaces.
# Plaintext on a non-loopback address is refused unless TLS is configured
# (CPC_TLS_CERT/CPC_TLS_KEY) or CPC_ALLOW_PLAINTEXT=true is set (behind a TLS-terminating proxy).
ENV CPC_ADDR=0.0.0.0:50051 \
    CPC_METRICS_ADDR=0.0.0.0:9464 \
    CPC_RULES=/srv/cpc-rules/rules \
    CPC_RECORD=/var/lib/cpc-rules/record.sqlite \
    CPC_LOG_FORMAT=json \
    CPC_HEALTH_ADDR=127.0.0.1:50051
# distroless's "nonroot" user and group.
USER 65532:65532
EXPOSE 50051 9464
# The standard gRPC health service, asked by the binary itself (the image has no other tools).
# With TLS, also set CPC_HEALTH_TLS_CA (and CPC_HEALTH_TLS_DOMAIN if the certificate does not
# name 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/cpc-rules", "health"]
ENTRYPOINT ["/usr/local/bin/cpc-rules"]
CMD ["serve"]
