# One image for every role: `rtt receiver`, `rtt worker`, `rtt serve`, `rtt stats`...
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY receiver ./receiver
COPY worker ./worker
COPY rtt ./rtt
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 rtt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER rtt
WORKDIR /home/rtt
ENV RTT_HOST=0.0.0.0 RTT_LOG_FORMAT=json RTT_SPOOL_DIR=/home/rtt/spool
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["rtt"]
CMD ["receiver"]
