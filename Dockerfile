# syntax=docker/dockerfile:1
# ferry: a small, non-root runtime image. Build: docker build -t ferry .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them. Cargo reads the [[bench]]
# targets Cargo.toml declares even when it does not build them, so their files come too.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY migrations ./migrations
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin ferry \
    && mkdir -p /data && chown ferry /data
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
USER 10001
WORKDIR /data
VOLUME ["/data"]
ENV FERRY_LISTEN=0.0.0.0:8080 \
    FERRY_DATABASE_URL=sqlite:///data/ferry.db
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["sh", "-c", "curl -fsS http://127.0.0.1:8080/healthz || exit 1"]
ENTRYPOINT ["ferry"]
CMD ["serve"]
