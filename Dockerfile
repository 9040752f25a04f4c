# One image, several roles: web (gunicorn), worker (RQ), scheduler, migrate.
#   docker run IMAGE                       -> web
#   docker run IMAGE batchline worker      -> RQ worker
#   docker run IMAGE batchline scheduler   -> outbox relay / periodic jobs (exactly one)
#   docker run IMAGE sh -c "batchline db upgrade && batchline tenants upgrade --all"   -> migrate
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# WeasyPrint (PDF exports) needs Pango; no compiler is needed at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/batchline
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY tenants ./tenants
COPY infra ./infra
RUN pip install . && useradd --system --home /srv/batchline batchline
USER batchline

ENV BATCHLINE_BIND=0.0.0.0:8000
EXPOSE 8000
CMD ["gunicorn", "-c", "infra/gunicorn.conf.py", "app.wsgi:app"]
