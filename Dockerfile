# driftgate as a sidecar: serves models/ (baked in at /models; mount a volume over it) on :8080.
#
# BASE_IMAGE is any Debian-like image with Python 3.11+ (`python` on PATH, the venv module,
# useradd). The default is the official Python image; deploy/image/build.sh --debootstrap
# builds an equivalent one from Debian packages where no image registry is reachable.
ARG BASE_IMAGE=python:3.11-slim

# Build stage: a virtualenv with driftgate and its wheels (with the otel extra: traces when
# OTEL_EXPORTER_OTLP_ENDPOINT is set). Nothing of it but the venv ships.
# deploy/image/wheelhouse/ is empty in a clone; build.sh fills it with wheels built on the
# host, and then pip installs from it alone (--no-index), for builds that reach no index.
# One COPY of the whole context (.dockerignore keeps it to what the build needs): every
# instruction costs a copy of the file system on a vfs-backed daemon.
FROM ${BASE_IMAGE} AS builder
COPY . /src/
RUN python -m venv /opt/venv \
    && if ls /src/deploy/image/wheelhouse/*.whl >/dev/null 2>&1; then \
         /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /src/deploy/image/wheelhouse 'driftgate[otel]'; \
       else \
         /opt/venv/bin/pip install --no-cache-dir '/src[otel]'; \
       fi \
    && /opt/venv/bin/pip uninstall -y -q pip

# Runtime stage: the venv, the bundled models, a non-root user; no compilers, no build cache.
FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin driftgate
COPY --from=builder /opt/venv /opt/venv
COPY --chown=10001:10001 models/ /models/
# Configuration goes through the contract's DRIFTGATE_* variables (override with docker -e / env:).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRIFTGATE_REPOSITORY=/models \
    DRIFTGATE_HOST=0.0.0.0 \
    DRIFTGATE_PORT=8080
USER 10001:10001
EXPOSE 8080
# Liveness only (readiness is for the orchestrator to route by); slim images have no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DRIFTGATE_PORT', '8080') + '/v2/health/live', timeout=2)"]
# Exec form: driftgate is PID 1 and gets SIGTERM itself; it fails readiness, finishes the
# requests in flight (at most DRIFTGATE_DRAIN_SECONDS, default 30) and exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["driftgate", "serve"]
