# syntax=docker/dockerfile:1
#
# token-health-exporter container image.
#
#   docker build \
#     --build-arg VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     -t token-health-exporter .
#   docker run --rm -p 10180:10180 token-health-exporter --demo
#
# Two builds of one commit a month apart give the same software: the base
# image is pinned by digest, the dependencies come from requirements.lock and
# the build backend from requirements-build.lock, both with hashes
# (--require-hashes), and the build date is the commit's (SOURCE_DATE_EPOCH).
#
# Two stages: the builder installs the locked dependencies and the exporter's
# wheel into a virtualenv; the final image gets only that venv, so no build
# tools, sources or pip caches ship. Both stages use the same base image, so
# the venv's interpreter symlink (/usr/local/bin/python3.11) is valid in the
# final stage.

# The base image: python:3.11-slim-bookworm by the digest of its multi-arch
# index, so a rebuild cannot pick up a changed tag. To move to a newer patch
# release, read the current digest with
#   docker buildx imagetools inspect docker.io/library/python:3.11-slim-bookworm
# (the "Digest:" line), replace PYTHON_IMAGE_DIGEST, rebuild and run the tests.
ARG PYTHON_IMAGE_NAME=docker.io/library/python:3.11-slim-bookworm
ARG PYTHON_IMAGE_DIGEST=sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE_NAME}@${PYTHON_IMAGE_DIGEST} AS builder

# The version label's value, if given, must be the version the wheel has.
ARG VERSION
# The commit, baked into the package (exporter/_build.py, see setup.py): the
# build context has no .git to ask.
ARG REVISION=unknown
# setup.py reads SOURCE_DATE_EPOCH from the environment for the build date.
ARG SOURCE_DATE_EPOCH

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, so this layer is reused until a lock file changes.
# --only-binary: the slim image has no compiler; every locked package has wheels.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
       --requirement requirements.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
       --requirement requirements-build.lock

# Only what the wheel needs (see .dockerignore, which allow-lists the same).
COPY pyproject.toml setup.py README.md LICENSE ./
COPY exporter/ ./exporter/

# --no-build-isolation: build with the locked setuptools in /opt/build rather
# than whatever version pip would fetch; --no-deps: they are installed above.
RUN TOKEN_EXPORTER_REVISION="${REVISION}" /opt/build/bin/pip wheel --no-cache-dir \
       --no-deps --no-build-isolation --wheel-dir /wheels . \
    && if [ -n "${VERSION}" ] && ! [ -e "/wheels/token_health_exporter-${VERSION}-py3-none-any.whl" ]; then \
         echo "VERSION=${VERSION} but the wheel is $(ls /wheels)" >&2; exit 1; \
       fi \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/*.whl


FROM ${PYTHON_IMAGE_NAME}@${PYTHON_IMAGE_DIGEST}

ARG PYTHON_IMAGE_NAME
ARG PYTHON_IMAGE_DIGEST
ARG VERSION
ARG REVISION=unknown
# RFC 3339, e.g. the commit's time: git log -1 --format=%cI
ARG CREATED
ARG SOURCE=https://github.com/token-health-exporter/token-health-exporter

LABEL org.opencontainers.image.title="token-health-exporter" \
      org.opencontainers.image.description="Prometheus exporter that keeps OAuth 2.0 client-credentials tokens healthy and visible" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE_NAME}" \
      org.opencontainers.image.base.digest="${PYTHON_IMAGE_DIGEST}"

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
