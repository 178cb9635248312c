# kpd in a container: the same daemon as the systemd unit, with tini as PID 1.
# See docs/operations.md, "Container". Build: docker build -t kpd .
#
# Run it with a volume for the ring files (what kpd accepted and has not delivered yet
# survives the container) and time to drain:
#   docker run --stop-timeout=90 -v kpd-run:/run/kpd -v kpd-state:/var/lib/kpd \
#     -v /etc/kpd/kpd.yaml:/etc/kpd/kpd.yaml:ro -p 9464:9464 kpd

# Debian is named so that the pinned tini below stays installable.
ARG BASE=python:3.11-slim-bookworm

# ---- build: kpd and its wheels into a venv, and the container's config ----------------------
FROM ${BASE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# kpd-client first: the daemon depends on it (and its setup.py includes its kpd_loops.h), and
# it is not on PyPI, so both are installed from here in one pip call.
COPY clients/python ./clients/python
COPY pyproject.toml setup.py README.md ./
COPY daemon ./daemon
RUN python -m venv /opt/kpd \
    && /opt/kpd/bin/pip install --no-compile ./clients/python .

# The example config with every default, except that metrics listen on all interfaces: in
# a container 127.0.0.1 is the container's own loopback, unreachable through -p 9464:9464.
# grep fails the build if the example's metrics line changed and sed matched nothing.
COPY config/kpd.example.yaml ./
RUN sed 's/^  listen: 127\.0\.0\.1:9464$/  listen: 0.0.0.0:9464/' kpd.example.yaml > kpd.yaml \
    && grep -q '^  listen: 0\.0\.0\.0:9464$' kpd.yaml \
    && /opt/kpd/bin/kpd check-config kpd.yaml

# ---- runtime ---------------------------------------------------------------------------------
FROM ${BASE}

# tini is PID 1: it forwards SIGTERM to the supervisor alone (which drains its children in
# order, like KillMode=mixed) and reaps any orphan, which a Python PID 1 would leave as zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so a host directory or a client container can be given access to the
# socket (mode 0660, group kpd) by number.
RUN groupadd --gid 10001 kpd \
    && useradd --uid 10001 --gid kpd --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin kpd \
    && install -d -o kpd -g kpd -m 0755 /run/kpd \
    && install -d -o kpd -g kpd -m 0750 /var/lib/kpd

COPY --from=build /opt/kpd /opt/kpd
COPY --from=build /src/kpd.yaml /etc/kpd/kpd.yaml

ENV PATH=/opt/kpd/bin:$PATH \
    PYTHONUNBUFFERED=1

# The socket directory (socket.path: /run/kpd/kpd.sock): share it with client containers.
# The state directory (rings.directory: /var/lib/kpd): the ring files, kept across restarts
# and upgrades of the container.
VOLUME ["/run/kpd", "/var/lib/kpd"]
EXPOSE 9464
# Numeric, so Kubernetes' runAsNonRoot can check it; 10001 is the kpd user made above.
USER 10001:10001

# The supervisor turns SIGTERM into the bounded drain (shutdown.timeout, 30 s by default):
# give it --stop-timeout=90, docker stop's default of 10 s cuts the drain short.
STOPSIGNAL SIGTERM

# Healthy = the supervisor's loop answers /metrics. A config without metrics (or on another
# port) needs --no-healthcheck or its own HEALTHCHECK.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=4).read(1)"]

ENTRYPOINT ["/usr/bin/tini", "--", "kpd"]
CMD ["run", "--config", "/etc/kpd/kpd.yaml"]
