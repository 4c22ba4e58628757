# The kakuremichi image: Control, gateway, agent, demo app and
# kakuremichictl in one image, FROM scratch; kakuremichi-agent is the agent
# alone, for a smaller footprint.
#
# Build it with hack/image.sh, not with `docker build .`: the script builds
# static binaries on the host (CGO_ENABLED=0) and prepares a build context
# holding them, the host's CA certificates and a passwd/group entry for the
# non-root user; this file only copies that context. (A multi-stage build
# would need a Go builder image pulled from a registry.)
#
#   hack/image.sh            # this machine's architecture, tagged kakuremichi:dev
#   hack/image.sh arm64      # linux/arm64, tagged kakuremichi:dev-arm64 (needs buildx
#                            # on an amd64 host; without it, only the binaries)
#
# Paths: /data is Control's data directory (embedded etcd, bootstrap token),
# /state a node's state (WireGuard key, credential, last configuration),
# /keys the API keys `kakuremichi init-keys` writes. All three belong to the
# image's user, so named volumes mounted there start out writable by it.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="kakuremichi" \
      org.opencontainers.image.description="Self-hosted tunnel: Control, gateways and agents publish apps behind NAT over WireGuard" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/kakuremichi/kakuremichi"

COPY rootfs/ /
COPY --chown=65532:65532 owned/ /
COPY kakuremichi kakuremichictl kakuremichi-agent /

# 65532 is "nonroot": no role needs root. Gateways listen on 8080/8443
# inside the container and the compose file maps 80/443 (or any port) to
# them, so no capability is needed either.
USER 65532:65532
ENV KAKUREMICHI_DATA_DIR=/data \
    KAKUREMICHI_STATE_DIR=/state \
    KAKUREMICHI_HTTP_LISTEN=:8080 \
    KAKUREMICHI_HTTPS_LISTEN=:8443
EXPOSE 7070 8080 8443 51820/udp

# Control's readiness; the compose file gives gateways and the demo app
# their own URL and turns it off for the agent, which listens on nothing.
HEALTHCHECK --interval=30s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/kakuremichi", "healthcheck", "http://127.0.0.1:7070/readyz"]

ENTRYPOINT ["/kakuremichi"]
CMD ["control", "--listen", ":7070"]
