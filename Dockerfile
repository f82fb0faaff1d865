# veer: release build in a Rust image, run from a slim Debian image as a non-root user.
#
#   docker build -t veer .
#   docker run --rm -p 8080:8080 -v "$PWD/config/canary.toml:/etc/veer/veer.toml:ro" veer
#
# The config is read from /etc/veer/veer.toml ($VEER_CONFIG); mount yours there.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin veer

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin veer \
    && mkdir -p /etc/veer /var/lib/veer \
    && chown veer /var/lib/veer
COPY --from=build /src/target/release/veer /usr/local/bin/veer
ENV VEER_CONFIG=/etc/veer/veer.toml
WORKDIR /var/lib/veer
USER veer
# 8080: HTTP (and h2c); 8443: HTTPS when [tls] is configured; 9901: the admin API.
EXPOSE 8080 8443 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/veer"]
CMD ["run"]
