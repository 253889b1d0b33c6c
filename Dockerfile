# The lc and lc-worker binaries on a small Debian base. Build: docker build -t launchcontrol .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lc --bin lc-worker

FROM debian:bookworm-slim
# docker-machine is not packaged; mount or copy your own binary and set LC_DOCKER_MACHINE.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lc /src/target/release/lc-worker /usr/local/bin/
ENV LC_LOG_FORMAT=json
CMD ["lc-worker"]
