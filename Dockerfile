# One image with the programs (and the conformance kit) and the plugin components; docker-compose.yml picks
# the program per service.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN scripts/build-plugins.sh \
 && cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/provisioner --create-home provisioner \
 && install -d -o provisioner -g provisioner /var/lib/provisioner/data
COPY --from=build /src/target/release/order-api /src/target/release/provisioner-host /src/target/release/vendor-sim /src/target/release/provisioner-conformance /usr/local/bin/
COPY --from=build /src/target/plugins/ /opt/provisioner/plugins/
USER provisioner
WORKDIR /var/lib/provisioner
