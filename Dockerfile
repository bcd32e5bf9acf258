# syntax=docker/dockerfile:1
# The modelgate image (CPU runner): one binary, any role.
#   docker build -t modelgate .
#   docker run -p 8080:8080 modelgate dev --listen 0.0.0.0:8080
# The CUDA runner's image is deploy/Dockerfile.cuda.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin modelgate && cp target/release/modelgate /usr/local/bin/modelgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/modelgate --create-home modelgate
COPY --from=build /usr/local/bin/modelgate /usr/local/bin/modelgate
USER 10001:10001
WORKDIR /var/lib/modelgate
ENV MODELGATE__DATA_DIR=/var/lib/modelgate \
    MODELGATE__GATEWAY__LISTEN=0.0.0.0:8080 \
    MODELGATE__RUNNER__LISTEN=0.0.0.0:50051 \
    MODELGATE__METRICS__LISTEN=0.0.0.0:9464 \
    MODELGATE__LOG__FORMAT=json
EXPOSE 8080 50051 9464
ENTRYPOINT ["/usr/local/bin/modelgate"]
CMD ["serve", "--role", "all"]
