# One image for every OrchestrateX service; the command picks the service:
#   docker run orchestratex serve providers
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY orchestratex ./orchestratex
COPY services ./services
COPY gateway ./gateway
RUN pip install '.[server]' && useradd --system --uid 10001 --home-dir /data orx && mkdir -p /data && chown orx /data

USER orx
ENV ORX_DATA_DIR=/data ORX_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 50051 50052 50053 50054 8080
ENTRYPOINT ["orchestratex"]
CMD ["up"]
