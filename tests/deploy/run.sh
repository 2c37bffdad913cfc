#!/usr/bin/env bash
# `make test-deploy`: build the image and run docker-compose.yml in real containers
# (tests/deploy/test_compose.py). Idempotent; leaves no container, network or volume behind.
#
# Needs a Docker engine and Compose (v2 `docker compose`, or `docker-compose`). Run as root
# on a Debian machine without them, it installs docker.io, docker-compose and debootstrap
# and starts dockerd. Docker Hub is not needed: unless RTT_PYTHON_IMAGE and RTT_VALKEY_IMAGE
# name images to use, stand-ins are built from Debian packages (tests/deploy/standins.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
say() { echo "test-deploy: $*" >&2; }

missing=()
command -v dockerd >/dev/null || command -v docker >/dev/null || missing+=(docker.io)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ -z "${RTT_PYTHON_IMAGE:-}" ]; then command -v debootstrap >/dev/null || missing+=(debootstrap); fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    else
        say "missing: ${missing[*]} (as root: apt-get install ${missing[*]})"
        exit 3
    fi
fi

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
        # The settings Docker needs on these machines: no default bridge, no iptables.
        sysctl -q -w net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
        mkdir -p .rtt
        say "starting dockerd (log: .rtt/dockerd.log); it keeps running for the next run"
        nohup dockerd --bridge=none --iptables=false >.rtt/dockerd.log 2>&1 &
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
    docker info >/dev/null 2>&1 || { say "no Docker engine answers (is dockerd running, may this user use it?)"; exit 3; }
fi

if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE="docker-compose"; fi

if [ -z "${RTT_PYTHON_IMAGE:-}" ] || [ -z "${RTT_VALKEY_IMAGE:-}" ]; then
    standins=$(tests/deploy/standins.sh)
    : "${RTT_PYTHON_IMAGE:=$(sed -n 's/^RTT_PYTHON_IMAGE=//p' <<<"$standins")}"
    : "${RTT_VALKEY_IMAGE:=$(sed -n 's/^RTT_VALKEY_IMAGE=//p' <<<"$standins")}"
fi
RTT_IMAGE=${RTT_IMAGE:-rtt-events:deploy-test}
say "building $RTT_IMAGE on $RTT_PYTHON_IMAGE"
docker build --network host --quiet --build-arg "PYTHON_IMAGE=$RTT_PYTHON_IMAGE" -t "$RTT_IMAGE" . >/dev/null

mkdir -p .rtt/test-deploy
export RTT_IMAGE RTT_PYTHON_IMAGE RTT_VALKEY_IMAGE RTT_COMPOSE="$COMPOSE" RTT_TEST_DEPLOY=1
export RTT_TEST_DEPLOY_LOGS="$PWD/.rtt/test-deploy"
say "running docker-compose.yml with $COMPOSE (container logs: .rtt/test-deploy/compose.log)"
exec "$PYTHON" -m pytest tests/deploy -p no:cacheprovider -v -s "$@"
