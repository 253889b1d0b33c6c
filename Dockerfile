# lc and lc-worker on a small Debian 12 base.
#
# With a registry (the public rust and debian images):
#   docker build -t launchcontrol .
# From Debian's packages only, binaries built on the host (no registry at all): see
# scripts/image.sh, which runs
#   cargo build --release --bin lc --bin lc-worker
#   scripts/image.sh launchcontrol
# that is, this file with BASE_IMAGE and BUILDER_IMAGE set to an image that mmdebstrap made
# (scripts/image.sh base) and a context whose prebuilt/ holds the two binaries: the build
# stage then copies them instead of compiling. Either way the binaries need a glibc no newer
# than Debian 12's.
ARG BASE_IMAGE=debian:bookworm-slim
ARG BUILDER_IMAGE=rust:1.95-bookworm

FROM ${BUILDER_IMAGE} AS build
# The legacy builder keeps this stage's image, untagged: the label lets scripts/image.sh
# find and remove it.
ARG BUILD_STAGE=launchcontrol
LABEL lc.build-stage=${BUILD_STAGE}
WORKDIR /src
COPY . .
RUN if [ -x prebuilt/lc ] && [ -x prebuilt/lc-worker ]; then \
      mkdir -p /out && cp prebuilt/lc prebuilt/lc-worker /out/; \
    else \
      cargo build --release --locked --bin lc --bin lc-worker && \
      mkdir -p /out && cp target/release/lc target/release/lc-worker /out/; \
    fi

FROM ${BASE_IMAGE}
# CA certificates for TLS engines and webhooks; curl for the healthchecks (GET /readyz).
# An image from scripts/image.sh base has both, and nothing is fetched.
RUN if [ ! -e /etc/ssl/certs/ca-certificates.crt ] || ! command -v curl >/dev/null; then \
      apt-get update && \
      apt-get install -y --no-install-recommends ca-certificates curl && \
      rm -rf /var/lib/apt/lists/*; \
    fi
# docker-machine is not packaged; mount or copy your own binary and set LC_DOCKER_MACHINE.
COPY --from=build /out/lc /out/lc-worker /usr/local/bin/
ENV LC_LOG_FORMAT=json
CMD ["lc-worker"]
