# syntax=docker/dockerfile:1
# reelhouse image: `docker build -t reelhouse .` then `docker run reelhouse serve` (or `worker`,
# `migrate`, any CLI command). Two build stages keep compilers, pip caches and npm out of the
# runtime image; the process runs as an unprivileged user (uid 10001) with its data in /data.
# tests/integration/ops/test_deploy.py parses and checks this file (no Docker engine in CI).

ARG PYTHON_VERSION=3.12

# --- build: the virtualenv with reelhouse and its dependencies, and the web UI's packages ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Debian's package versions move with the base image's point releases: pinning them would break
# the build at the next one, so the base image tag is what pins them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/reelhouse
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/reelhouse/bin/pip install --upgrade pip \
    && /opt/reelhouse/bin/pip install .
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts \
    && mv node_modules /opt/reelhouse/node_modules

# --- runtime: Python, ffmpeg and aria2c, the virtualenv, nothing else ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/reelhouse/bin:$PATH \
    REELHOUSE_HOME=/data \
    DATA_DIR=/data \
    WEB_NODE_MODULES=/opt/reelhouse/node_modules \
    HTTP_ADDR=0.0.0.0:8080
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg aria2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 reelhouse \
    && useradd --system --uid 10001 --gid reelhouse --home-dir /data --shell /usr/sbin/nologin reelhouse \
    && mkdir -p /data \
    && chown reelhouse:reelhouse /data
COPY --from=build /opt/reelhouse /opt/reelhouse
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["reelhouse"]
CMD ["serve"]
