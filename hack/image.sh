#!/usr/bin/env bash
# Builds the container image from this checkout with nothing pulled from a
# registry: static binaries built here (CGO_ENABLED=0), the host's CA
# certificates and a passwd/group entry for the non-root user go into a
# temporary build context, and the root Dockerfile (FROM scratch) copies it.
#
#   hack/image.sh            this machine's architecture, tagged kakuremichi:dev
#   hack/image.sh arm64      linux/arm64 (or amd64), tagged kakuremichi:dev-arm64
#
# An image of another architecture than the host's needs docker buildx
# (the legacy builder cannot build FROM scratch for another platform);
# without it the script leaves that architecture's static binaries in
# bin/linux-ARCH/ (the Linux binary release) and says so.
#
# IMAGE overrides the tag; VERSION the version stamped into the binaries
# and the image's labels (default: git describe).
set -euo pipefail
cd "$(dirname "$0")/.."

host_arch="$(go env GOHOSTARCH)"
arch="${1:-$host_arch}"
case "$arch" in
  amd64|arm64) ;;
  *) echo "usage: hack/image.sh [amd64|arm64]" >&2; exit 2 ;;
esac
if [ "$arch" = "$host_arch" ]; then
  image="${IMAGE:-kakuremichi:dev}"
else
  image="${IMAGE:-kakuremichi:dev-$arch}"
fi
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
cacerts=/etc/ssl/certs/ca-certificates.crt
if [ ! -r "$cacerts" ]; then
  echo "hack/image.sh: $cacerts is missing (Debian: apt-get install ca-certificates)" >&2
  exit 1
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/kakuremichi-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
  -ldflags "-s -w -X github.com/kakuremichi/kakuremichi/internal/buildinfo.version=$version" \
  -o "$ctx/" ./cmd/kakuremichi ./cmd/kakuremichictl ./cmd/kakuremichi-agent

# Owned by root: certificates and the user database.
mkdir -p "$ctx/rootfs/etc/ssl/certs"
cp "$cacerts" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
# Owned by the image's user (Dockerfile: COPY --chown): the directories
# volumes are mounted on, a home and a temporary directory.
mkdir -p "$ctx/owned/data" "$ctx/owned/state" "$ctx/owned/keys" "$ctx/owned/home/nonroot" "$ctx/owned/tmp"
chmod 0700 "$ctx/owned/data" "$ctx/owned/state" "$ctx/owned/keys" "$ctx/owned/home/nonroot"
chmod 1777 "$ctx/owned/tmp"

build_args=(-f Dockerfile -t "$image"
  --build-arg VERSION="$version" --build-arg REVISION="$revision"
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ "$arch" = "$host_arch" ]; then
  docker build --quiet "${build_args[@]}" "$ctx" >/dev/null
elif docker buildx version >/dev/null 2>&1; then
  docker buildx build --quiet --load --platform "linux/$arch" "${build_args[@]}" "$ctx" >/dev/null
else
  mkdir -p "bin/linux-$arch"
  cp "$ctx/kakuremichi" "$ctx/kakuremichictl" "$ctx/kakuremichi-agent" "bin/linux-$arch/"
  echo "hack/image.sh: no docker buildx here to build a linux/$arch image; its binaries are in bin/linux-$arch/" >&2
  echo "bin/linux-$arch"
  exit 0
fi
echo "$image"
