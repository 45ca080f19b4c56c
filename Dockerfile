# syntax=docker/dockerfile:1
# Build: docker build -t seam-access-sync .
# Run:   docker run -p 8080:8080 -e DATABASE_URL=... -e SEAM_API_KEY=... -e SEAM_WEBHOOK_SECRET=... seam-access-sync

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /app
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin seam-access-sync \
    && rm -rf src
# Queries are checked at run time, so the build needs no database. The
# migrations and config/base.toml are compiled into the binary.
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin seam-access-sync

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin seam
WORKDIR /app
COPY --from=builder /app/target/release/seam-access-sync /usr/local/bin/seam-access-sync
COPY config ./config
ENV APP_ENVIRONMENT=production \
    APP_CONFIG_DIR=/app/config
USER 10001
EXPOSE 8080
ENTRYPOINT ["seam-access-sync"]
CMD ["serve"]
