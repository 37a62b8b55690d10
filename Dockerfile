# syntax=docker/dockerfile:1
#
# token-health-exporter container image.
#
#   docker build -t token-health-exporter .
#   docker run --rm -p 10180:10180 token-health-exporter --demo
#
# Two stages: the builder turns the source into a wheel and installs it, with
# its dependencies, into a virtualenv; the final image gets only that venv, so
# no build tools, sources or pip caches ship. Both stages use the same base
# image, so the venv's interpreter symlink (/usr/local/bin/python3.11) is valid
# in the final stage.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel needs (see .dockerignore, which allow-lists the same).
COPY pyproject.toml README.md ./
COPY exporter/ ./exporter/

# The project is installed from its own wheel, whose version comes from
# pyproject.toml; dependency versions are bounded there.
RUN python -m venv /opt/venv \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl


FROM python:3.11-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="token-health-exporter" \
      org.opencontainers.image.description="Prometheus exporter that keeps OAuth 2.0 client-credentials tokens healthy and visible" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# PYTHONDONTWRITEBYTECODE: the venv is precompiled by pip and the root
# filesystem is read-only in the Kubernetes manifests.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric UID/GID (65532, the conventional "nonroot" id) so that
# Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup and
# file ownership is predictable for mounted secrets.
RUN groupadd --system --gid 65532 exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin exporter

COPY --from=builder /opt/venv /opt/venv

USER 65532:65532

EXPOSE 10180

# The slim image has no curl or wget; Python's urllib does the job. Set
# HEALTHCHECK_URL when the exporter listens elsewhere (another
# --web.listen-address); with TLS or basic auth from --web.config.file,
# disable the check (docker run --no-healthcheck) or point it accordingly.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:10180/-/healthy'), timeout=4)"]

ENTRYPOINT ["token-health-exporter"]
CMD ["--config.file=/etc/token-health-exporter/providers.yaml"]
