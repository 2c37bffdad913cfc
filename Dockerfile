# One image for every role: `rtt receiver`, `rtt worker`, `rtt serve`, `rtt stats`...
# PYTHON_IMAGE: any Debian-based Python >= 3.11 image with the venv module; the default is
# the public one, a registry mirror or a locally built stand-in works the same.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
RUN python3 -m venv /opt/rtt
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY receiver ./receiver
COPY worker ./worker
COPY rtt ./rtt
RUN /opt/rtt/bin/pip install --no-cache-dir --quiet .

FROM ${PYTHON_IMAGE}
# The spool directory is created here, owned by the user the container runs as: a named
# volume mounted on it starts as a copy of it, so the receiver can write its spool.
RUN useradd --create-home --uid 10001 --user-group rtt \
 && mkdir -p /spool \
 && chown rtt:rtt /spool
COPY --from=build /opt/rtt /opt/rtt
USER rtt
WORKDIR /home/rtt
ENV PATH=/opt/rtt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RTT_HOST=0.0.0.0 \
    RTT_LOG_FORMAT=json \
    RTT_SPOOL_DIR=/spool
EXPOSE 8080 9464
# `rtt health` checks the role the container runs: a receiver's /readyz on RTT_PORT, a
# worker's heartbeat in Redis.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 CMD ["rtt", "health"]
ENTRYPOINT ["rtt"]
CMD ["receiver"]
