# The gateway as a container image: untested here (no container engine runs on the
# build machine); see "Running several instances" in the README.
# Build stage: a wheel and its dependencies, compiled where they need it.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: the wheels only, a non-root user, config and spool as volumes.
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway gateway \
    && mkdir -p /etc/gateway /var/lib/gateway/spool \
    && chown -R gateway /var/lib/gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/gateway.json /etc/gateway/config.json
USER gateway
WORKDIR /var/lib/gateway
VOLUME ["/etc/gateway", "/var/lib/gateway/spool"]
EXPOSE 8080
# SIGTERM drains (listeners first, then in-flight requests, then the event pipeline):
# give it longer than server.shutdown_timeout before a kill.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2)"]
ENTRYPOINT ["gateway", "run", "--config", "/etc/gateway/config.json"]
