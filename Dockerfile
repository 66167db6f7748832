# The image behind docker-compose.yml's web, worker and migrate services.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMAGINGX_HOME=/var/lib/imagingx

RUN useradd --system --uid 10001 --home-dir /var/lib/imagingx --create-home imagingx

WORKDIR /srv/imagingx
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static

# extra pip packages for a deployment, e.g. --build-arg EXTRA_PACKAGES="sentry-sdk"
ARG EXTRA_PACKAGES=""
RUN pip install -e . ${EXTRA_PACKAGES}

USER imagingx
EXPOSE 8000
CMD ["imagingx", "web", "--host", "0.0.0.0", "--port", "8000"]
