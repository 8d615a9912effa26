# eas-serving: eas-server, eascmd and Ray in one image. The Helm chart (helm/eas) runs it
# as the eas-server Deployment and as the KubeRay head and workers: instances import
# eas/ and processors/ on every Ray node, so all of them need the same code and Ray.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0

WORKDIR /opt/eas
COPY pyproject.toml README.md ./
COPY eas ./eas
COPY eascmd ./eascmd
COPY processors ./processors
RUN pip install ".[all]" \
 && useradd --create-home --uid 1000 eas \
 && mkdir -p /data && chown eas /data
COPY docker/entrypoint.sh /usr/local/bin/eas-entrypoint

USER 1000
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["eas-entrypoint"]
CMD ["eas-server", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
