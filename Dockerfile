# Multi-stage build of banyan. Build: docker build -t banyan .
# Run:   docker run -p 8080:8080 -p 9090:9090 -e BANYAN_ADMIN_TOKEN=... \
#          -v "$PWD/my-config:/srv/banyan/config:ro" -v "$PWD/my-routes:/srv/banyan/routes:ro" banyan
# (the example config listens on 127.0.0.1; in a container set server.listen and
#  admin.listen to 0.0.0.0 — the admin API then needs a token — as
#  config/kubernetes/config.yaml does. The HEALTHCHECK reaches the admin port from inside.)

FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild Pingora.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in decision headers compare; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked \
 && rm -rf src benches examples
COPY src src
COPY benches benches
COPY examples examples
# The release profile keeps line tables for profiling; the image does not need them.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin banyan \
 && strip target/release/banyan

FROM debian:bookworm-slim
# ca-certificates: the system roots for upstreams with `tls` and no `ca`; curl: the
# HEALTHCHECK below.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /srv/banyan --create-home banyan
WORKDIR /srv/banyan
COPY --from=build /src/target/release/banyan /usr/local/bin/banyan
COPY config config
COPY routes routes
RUN mkdir -p state && chown banyan:banyan state
USER banyan
# Config and routes are meant to be mounted over the examples (routes are hot-reloaded
# from the mounted folder); state holds overrides, the audit log and the diff log.
VOLUME ["/srv/banyan/config", "/srv/banyan/routes", "/srv/banyan/state"]
EXPOSE 8080 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["banyan"]
CMD ["run", "--config", "config/banyan.toml"]
