# syntax=docker/dockerfile:1
# One image for every plantd component: `plantd broker|state|identity|gateway|operator`.
# Multi-stage: build wheels with the toolchain, run from a slim base as a non-root user
# (uid 10001 = plantd.common.contract.IMAGE_UID) with a read-only root filesystem in mind.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY pyproject.toml README.md ./
COPY services/ services/
COPY operator/ operator/
RUN python -m venv /opt/plantd \
 && /opt/plantd/bin/pip install --upgrade pip==25.3 \
 && /opt/plantd/bin/pip install .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="plantd" \
      org.opencontainers.image.description="plantd: ZeroMQ Majordomo bus, state, identity, gRPC gateway and Kubernetes operator" \
      org.opencontainers.image.licenses="MIT"
ARG UID=10001
RUN groupadd --system --gid ${UID} plantd \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /home/plantd --create-home --shell /usr/sbin/nologin plantd
COPY --from=build /opt/plantd /opt/plantd
# Standalone components bind loopback by default; in a container they must listen on all
# interfaces (the operator sets the same values; docs/security.md "Bind addresses").
ENV PATH=/opt/plantd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/plantd \
    PLANTD_BROKER_ENDPOINT=tcp://*:9797 \
    PLANTD_BROKER_BUS_BIND=* \
    PLANTD_BROKER_HTTP_HOST=0.0.0.0 \
    PLANTD_STATE_HTTP_HOST=0.0.0.0 \
    PLANTD_IDENTITY_HTTP_HOST=0.0.0.0 \
    PLANTD_ECHO_HTTP_HOST=0.0.0.0 \
    PLANTD_GATEWAY_HTTP_HOST=0.0.0.0
USER ${UID}:${UID}
WORKDIR /home/plantd
# 9797 MDP, 11000-13001 buses, 8080-8085 health/metrics, 50051 gRPC.
EXPOSE 9797 11000 11001 12000 12001 13000 13001 8080 8081 8082 8083 8085 50051
ENTRYPOINT ["plantd"]
CMD ["--help"]
