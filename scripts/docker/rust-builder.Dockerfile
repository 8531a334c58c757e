# A local stand-in for rust:1.95-slim-bookworm, for machines that cannot pull it
# (scripts/check-docker.sh builds it). Like the real one: Debian bookworm, gcc and libc headers
# for crates that build C, and a Rust toolchain on PATH; here the toolchain is this machine's own,
# the build context (its share/doc left out). Users with a registry pull the real image.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# This machine reaches the registries through a proxy with its own CA: trust what the host trusts,
# so that cargo can fetch crates during the build.
COPY host-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH \
    CARGO_HOME=/usr/local/cargo
RUN cargo --version && rustc --version
