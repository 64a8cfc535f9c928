# consent-service container image.
#
# Build:  docker build -t consent-service:local .
# Run:    see docker-compose.yml (PostgreSQL + one-shot `migrate` + `api`).
#
# Two stages: the builder resolves the locked dependencies with uv into /app/.venv; the runtime
# stage copies /app only (no uv, no build cache, no dev dependencies) and runs as a non-root user.

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

# uv at a pinned version; installed with pip so no binary is fetched outside the package index.
RUN pip install --no-cache-dir uv==0.13.9

# Use the image's own interpreter (never download one), copy instead of hard-linking from the
# cache (the cache is not part of the final image), and precompile bytecode once at build time.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed (editable) into the same environment. The code finds its
# migrations at /app/alembic, relative to the package, so both must stay side by side in /app.
COPY service/ ./service/
COPY alembic/ ./alembic/
COPY examples/ ./examples/
RUN uv sync --frozen --no-dev

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

# A fixed uid/gid so volume permissions and PodSecurity `runAsUser` policies are predictable.
RUN groupadd --system --gid 10001 consent \
    && useradd --system --uid 10001 --gid consent --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin consent

WORKDIR /app
# The code belongs to root (the service cannot change it); only the data folder is the service's.
COPY --from=builder /app /app
RUN mkdir -p /app/.consent-data && chown consent:consent /app/.consent-data

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSENT_ENV=production

# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd (hadolint DL3066).
USER 10001:10001

EXPOSE 8000

# Ready = database reachable and migrated to head. The slim image has no curl; urlopen raises
# (exit 1) on a connection error or any non-2xx answer such as /readyz's 503.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["consent-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
