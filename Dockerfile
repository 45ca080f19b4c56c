# syntax=docker/dockerfile:1
# Build: docker build -t seam-access-sync .
# Run:   docker run -p 8080:8080 --ulimit nofile=4096:4096 --stop-timeout 30 \
#          -e DATABASE_URL=... -e SEAM_API_KEY=... -e SEAM_WEBHOOK_SECRET=... seam-access-sync
# (a Dockerfile cannot set ulimits: the file-descriptor limit must hold
# server.max_connections = 1,024 sockets plus the pools, as docker-compose.yml
# and deploy/seam-access-sync.service set it; the stop timeout must exceed
# server.shutdown_deadline_ms = 20 s.)

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /app
# The whole source (see .dockerignore): Cargo.toml names bench and test targets
# whose files must exist. The cargo registry and target folder are BuildKit
# caches, so a source change rebuilds only this crate.
COPY . .
# Queries are checked at compile time against the offline data in .sqlx/, so the
# build needs no database; migrations and config/base.toml are compiled into the
# binary.
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked --bin seam-access-sync \
    && cp target/release/seam-access-sync /usr/local/bin/seam-access-sync

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin seam
WORKDIR /app
COPY --from=builder /usr/local/bin/seam-access-sync /usr/local/bin/seam-access-sync
COPY config ./config
ENV APP_ENVIRONMENT=production \
    APP_CONFIG_DIR=/app/config
USER 10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 CMD ["seam-access-sync", "healthcheck"]
ENTRYPOINT ["seam-access-sync"]
CMD ["serve"]
