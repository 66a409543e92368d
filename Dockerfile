# One image for every waiter-bus binary; docker-compose.yml and the
# Kubernetes manifests choose the binary with `command`.
#
#   docker build -t waiter-bus:dev .
#
# The binaries built here are the ones listed on the `cargo build` line;
# tests/deploy checks that every binary compose and Kubernetes run is on it.

FROM rust:1.95-bookworm AS build
# librdkafka is compiled from source by rdkafka-sys: C toolchain, perl for
# its configure script, zlib headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin gateway --bin dispatch --bin waiter --bin ledger --bin tenants --bin load --bin console \
 && mkdir -p /out \
 && cp target/release/gateway target/release/dispatch target/release/waiter \
       target/release/ledger target/release/tenants target/release/load \
       target/release/console /out/

FROM debian:bookworm-slim
# curl: health checks and the tenant registration jobs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home waiter-bus
COPY --from=build /out/ /usr/local/bin/
USER 10001
# Services log to stdout; settings come from WAITER_BUS__… variables.
ENV RUST_LOG=info
