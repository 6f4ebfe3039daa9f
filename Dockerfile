# syntax=docker/dockerfile:1
#
# blogstore container image.
#
#   docker build -t blogstore .
#   docker run --rm -p 50051:50051 blogstore            # embedded PostgreSQL (dev/demo only)
#
# Production: set DATABASE_URL (postgresql+psycopg2://...) so `serve` uses that
# PostgreSQL; `serve` then does NOT migrate. Run `blogstore migrate` (same image,
# command ["migrate"]) as a separate deploy step before rolling out new servers;
# it holds a pg_advisory_lock, so concurrent runs are safe. See deploy/.
#
# Only linux/amd64 can be built: pgserver publishes no linux/arm64 wheel and no
# sdist (uv.lock). On arm64 hosts use `docker build --platform linux/amd64`.

# Both stages must use the same interpreter: the venv's python is a symlink to
# /usr/local/bin/python3.11 of the base image. Pin by digest for reproducibility.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Same uv version as the one that wrote uv.lock (lock revision 5).
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Use the image's Python (never download one), build the venv at the path it
# will have at run time (console-script shebangs are absolute), and precompile
# bytecode because the runtime root filesystem may be read-only.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# 1) Third-party dependencies only: this layer is rebuilt only when the lock or
#    a pyproject.toml changes.
COPY pyproject.toml uv.lock ./
COPY clients/pyproject.toml clients/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-install-workspace

# 2) The project and the workspace member, installed as regular (non-editable)
#    wheels so the runtime stage needs no source tree.
#    (One COPY per directory: `COPY a b ./` would merge their contents.)
COPY server ./server
COPY storage ./storage
COPY migrations ./migrations
COPY clients ./clients
COPY alembic.ini README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Non-root user. BLOGSTORE_DATA_DIR is only used when DATABASE_URL is unset
# (embedded pgserver); mount a volume there to keep that data.
RUN groupadd --system --gid 10001 blogstore \
 && useradd --system --uid 10001 --gid 10001 --create-home \
        --home-dir /home/blogstore --shell /usr/sbin/nologin blogstore \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/blogstore

WORKDIR /app

# The venv holds server/, storage/ and the blogstore client package; alembic.ini
# and migrations/ are not in any wheel and are found relative to /app.
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/alembic.ini /app/alembic.ini
COPY --from=builder /app/migrations /app/migrations

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BLOGSTORE_LOG_FORMAT=json \
    BLOGSTORE_DATA_DIR=/var/lib/blogstore

EXPOSE 50051 9464

USER 10001:10001

# grpc.health.v1 Check on localhost; exits 0 only when SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["blogstore", "healthcheck", "--timeout", "2"]

# Exec form: blogstore is PID 1 and receives SIGTERM directly (drains, exits 0).
ENTRYPOINT ["blogstore"]
CMD ["serve"]
