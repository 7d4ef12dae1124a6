# syntax=docker/dockerfile:1
# ha-ingestor container image: a static (musl) release build, then the binary alone
# on an empty base. Multi-arch (docker buildx, see docs/install.md):
#   docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE:TAG --push .
# The runtime from a binary built elsewhere (a static one, or one with its libraries
# beside it in the same tree), without the Rust stage:
#   docker build --target runtime-local -f Dockerfile CONTEXT   # CONTEXT/rootfs/ is copied to /

ARG RUST_VERSION=1.95
ARG ALPINE_VERSION=3.22

# ---- build: a static binary for the platform being built (natively, or under QEMU with buildx)
FROM rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# `.git` is not in the context: the commit shown by --version comes from this argument.
ARG BUILD_COMMIT=unknown
ENV BUILD_COMMIT=${BUILD_COMMIT}
# Without the line tables of the release profile: 25 MB instead of 100 MB (symbols stay,
# so a backtrace still names its functions).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ha-ingestor \
 && mkdir -p /rootfs/usr/local/bin /data \
 && cp target/release/ha-ingestor /rootfs/usr/local/bin/ha-ingestor \
 && /rootfs/usr/local/bin/ha-ingestor --version

# ---- what every runtime has: user, volume, port, health check, labels
FROM scratch AS runtime-base
LABEL org.opencontainers.image.title="ha-ingestor" \
      org.opencontainers.image.description="Captures every Home Assistant event (WebSocket API and MQTT) and stores it in InfluxDB without losing data" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/install.md"
# data_dir defaults to ./data, which is /data from the working directory /.
WORKDIR /
# The monitor (/health, /ready, /metrics, status page) inside the container only;
# publish the port to reach it. Overrides: HA_INGESTOR_<SECTION>__<KEY>.
ENV HA_INGESTOR_MONITOR__LISTEN=0.0.0.0:9464
EXPOSE 9464
# A non-root user without a passwd entry (the distroless "nonroot" ids).
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/ha-ingestor", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ha-ingestor"]
CMD ["run", "--config", "/config/ha-ingestor.toml"]

# ---- the runtime from a local tree (tests, or a binary built outside Docker):
# CONTEXT/rootfs/usr/local/bin/ha-ingestor (and, for a dynamic binary, its libraries at
# their paths), and an empty folder CONTEXT/data/ that becomes the service user's /data.
FROM runtime-base AS runtime-local
COPY rootfs/ /
COPY --chown=65532:65532 data/ /data/
VOLUME ["/data"]

# ---- the default: the runtime from the build stage
FROM runtime-base AS runtime
ARG BUILD_COMMIT=unknown
LABEL org.opencontainers.image.revision=${BUILD_COMMIT}
COPY --from=build /rootfs/usr/ /usr/
COPY --from=build --chown=65532:65532 /data/ /data/
VOLUME ["/data"]
