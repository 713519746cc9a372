# syntax=docker/dockerfile:1
# Apotheca: the GraphQL server with the built PWA, one image.
#
#   docker build -t apotheca .
#   docker run -p 8000:8000 -v apotheca-data:/data apotheca
#
# SQLite in the /data volume by default; for PostgreSQL pass
#   -e APOTHECA_DATABASE_URL=postgresql+asyncpg://user:password@host:5432/apotheca
# and, when running more than one container, the same -e APOTHECA_SECRET_KEY=... to each.

# --- stage 1: the PWA, when there is one ---------------------------------------------------------
FROM node:20-slim AS pwa
WORKDIR /pwa
# The bracket glob copies pwa/ when it exists and nothing when it does not (an empty pwa/ is
# not kept by git), so the image builds before the PWA is written.
COPY graphql_schema /graphql_schema
COPY pw[a] /pwa/
RUN set -eu; \
    if [ -f package.json ]; then \
        rm -rf node_modules dist; \
        if [ -f package-lock.json ]; then npm ci; else npm install; fi; \
        npm run build; \
        test -f dist/index.html || { echo "npm run build left no dist/index.html" >&2; exit 1; }; \
    else \
        echo "pwa/package.json not found: building the image without the PWA"; \
    fi; \
    mkdir -p dist

# --- stage 2: the server ------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed from /src (removed afterwards), so nothing in the working directory can shadow the
# installed package. README.md is optional for the COPY (pyproject.toml names it as the readme).
COPY pyproject.toml README.md* /src/
COPY server/ /src/server/
RUN pip install --no-cache-dir /src && rm -rf /src

RUN groupadd --system --gid 10001 apotheca \
    && useradd --system --uid 10001 --gid apotheca --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin apotheca \
    && mkdir -p /app /data \
    && chown apotheca:apotheca /data

WORKDIR /app
COPY --from=pwa /pwa/dist /app/pwa/dist

# The secret file lives in the volume so sessions survive a new container; the default beside
# the working directory is not writable by the non-root user.
ENV APOTHECA_DATABASE_URL=sqlite+aiosqlite:////data/apotheca.db \
    APOTHECA_SECRET_FILE=/data/secret.key \
    APOTHECA_PWA_DIR=/app/pwa/dist
VOLUME /data

USER apotheca
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["apotheca", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
