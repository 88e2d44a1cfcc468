# goclaw in a distroless container: a static musl binary on
# gcr.io/distroless/static-debian12, running as nonroot.
#
#   docker build -t goclaw .
#   printf '%s' "$(head -c 32 /dev/urandom | base64)" > token
#   docker run -d --name goclaw -p 18789:18789 -p 127.0.0.1:18790:18790 \
#     -v goclaw-state:/var/lib/goclaw \
#     -v "$PWD/token:/run/secrets/goclaw_token:ro" -e GOCLAW_TOKEN_FILE=/run/secrets/goclaw_token \
#     goclaw
#
# (or -e GOCLAW_TOKEN=... instead of the secret file). README.md, "Deploy".

# ---- build: a static binary for this architecture's musl target.
FROM rust:1.95-alpine AS build
WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. --no-default-features leaves
# out the `tls` feature: wss:// is for goclaw node and the operator
# commands dialling a gateway behind a TLS proxy, never for the gateway,
# and without it nothing here compiles C (ring) and the binary is 1 MB
# smaller.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --no-default-features \
 && rm -rf src

# The gateway itself. Pure Rust without `tls`: the official image's gcc is
# the only linker it needs, and musl targets link statically by default.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --no-default-features \
 && mkdir -p /out/state \
 && cp target/release/goclaw /out/goclaw

# ---- run: no shell, no package manager, uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/goclaw /goclaw
COPY --from=build --chown=65532:65532 /out/state /var/lib/goclaw
# distroless's "nonroot" user, by number so any host can resolve it.
USER 65532:65532

# Listens on every interface in the container; the gateway refuses to do
# that without a token (GOCLAW_TOKEN or GOCLAW_TOKEN_FILE), so a forgotten
# secret is a clear exit 2, not an open gateway.
ENV GOCLAW_LISTEN=0.0.0.0:18789 \
    GOCLAW_METRICS_LISTEN=0.0.0.0:18790 \
    GOCLAW_STATE_DIR=/var/lib/goclaw
EXPOSE 18789 18790
VOLUME ["/var/lib/goclaw"]

# No shell or curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["/goclaw", "healthcheck"]

ENTRYPOINT ["/goclaw"]
CMD ["serve"]
