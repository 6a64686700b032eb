# hashbuy's image: the one binary, with the bundled sample stream and its
# tables in /samples. Used by docker-compose.yml; `docker build -t hashbuy .`
# builds it alone. cargo builds librdkafka from source with the build
# image's C toolchain; protoc comes prebuilt with protoc-bin-vendored.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hashbuy

FROM debian:bookworm-slim
# Root certificates for the provider's HTTPS (api.stripe.com).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hashbuy /usr/local/bin/hashbuy
COPY samples /samples
ENTRYPOINT ["hashbuy"]
