# syntax=docker/dockerfile:1
#
# dsr-orchestrator container image.
#
#   docker build -t dsr-orchestrator:0.1.0 .
#
# Two stages: the release binary is built with cargo in the Rust image, then
# copied onto distroless/cc (glibc and libgcc, no shell, no package manager)
# and run as the distroless "nonroot" user (65532:65532). Nothing in the image
# needs a writable root filesystem: run it read-only, with a volume at
# /var/lib/dsr for SQLite (or DSR_DATABASE_URL=postgres://...).

# ---- build -------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# The whole source tree (see .dockerignore). build.rs compiles proto/ with
# protox, so no protoc is needed; migrations/ is embedded at compile time.
COPY . .

# Cache the registry and the target directory between builds (BuildKit);
# the binary is copied out of the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dsr-orchestrator \
 && install -D -m 0755 target/release/dsr-orchestrator /out/dsr-orchestrator

# A data directory owned by the runtime user, so an anonymous volume (or an
# emptyDir without fsGroup) is writable.
RUN install -d -m 0750 -o 65532 -g 65532 /out/var/lib/dsr

# ---- runtime -----------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="dsr-orchestrator" \
      org.opencontainers.image.description="Fans data-subject-rights requests out to every processor and keeps one completion record per request." \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/dsr-orchestrator /usr/local/bin/dsr-orchestrator
COPY --from=build --chown=65532:65532 /out/var/lib/dsr /var/lib/dsr

# Listen on all interfaces inside the container; SQLite by default, in the
# volume. Every setting can be overridden with its DSR_* variable or flag.
ENV DSR_LISTEN_ADDR=0.0.0.0:50051 \
    DSR_ADMIN_LISTEN_ADDR=0.0.0.0:9090 \
    DSR_DATABASE_URL=sqlite:///var/lib/dsr/dsr.db \
    DSR_LOG_FORMAT=json

# gRPC API, admin HTTP (/metrics, /healthz, /readyz).
EXPOSE 50051 9090
VOLUME ["/var/lib/dsr"]
WORKDIR /var/lib/dsr
USER 65532:65532

ENTRYPOINT ["/usr/local/bin/dsr-orchestrator"]
