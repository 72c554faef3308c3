# Switchboard's container image: `switchboard run` as PID 1, non-root, its
# data dir a volume, health-checked with `switchboard probe` (no curl).
#
#   docker build --build-arg SWITCHBOARD_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t switchboard:0.1.0 .
#   docker run --rm -v switchboard-data:/var/lib/switchboard -p 127.0.0.1:9102:9102 switchboard:0.1.0 \
#       run --marathon http://marathon:8080 --consul http://consul:8500
#
# Inside the container the status server listens on 0.0.0.0:9102
# (SWITCHBOARD_LISTEN below), so that the orchestrator's health and readiness
# checks reach it: the status page, /metrics and POST /api/retry-refused are
# then open to whatever reaches that port. Publish it on loopback, or keep it
# on a network only operators reach.
#
# SIGTERM (docker stop, Marathon's kill) is handled by the binary as on the
# host: the leader stops writing, releases the HA lock, and exits 0. It spawns
# no child processes, so as PID 1 it has nothing to reap.
#
# .ci/run builds the runtime stage below with buildah on a Debian base made
# locally with debootstrap (no registry is reachable there) and runs
# `switchboard demo` in the image; see README, "Container image".

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# .git is not in the build context (.dockerignore): pass the commit for --version.
ARG SWITCHBOARD_GIT_COMMIT=unknown
ENV SWITCHBOARD_GIT_COMMIT=${SWITCHBOARD_GIT_COMMIT}
RUN cargo build --locked --release --bin switchboard \
 && cp target/release/switchboard /switchboard

FROM ${RUNTIME_IMAGE} AS runtime
# CA certificates: a company CA installed on the host image is trusted too
# (the binary also bundles Mozilla's roots).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/switchboard --shell /usr/sbin/nologin switchboard \
 && install -d -o switchboard -g switchboard -m 0750 /var/lib/switchboard
COPY --from=build /switchboard /usr/local/bin/switchboard

ARG VERSION=0.1.0
ARG SWITCHBOARD_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="switchboard" \
      org.opencontainers.image.description="Keeps Consul, Kong and Vulcand in step with what Apache Marathon runs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${SWITCHBOARD_GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

ENV SWITCHBOARD_LISTEN=0.0.0.0:9102 \
    SWITCHBOARD_DATA_DIR=/var/lib/switchboard \
    SWITCHBOARD_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/switchboard
VOLUME ["/var/lib/switchboard"]
EXPOSE 9102
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/switchboard", "probe", "--timeout", "4s", "http://127.0.0.1:9102/health"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["run"]
