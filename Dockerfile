# syntax=docker/dockerfile:1
# One image for every plantd component: `plantd broker|state|identity|gateway|operator`.
# Multi-stage: build the virtualenv in one stage, run from a clean base as a non-root user
# (uid 10001 = plantd.common.contract.IMAGE_UID) with a read-only root filesystem.
#
# BASE_IMAGE is any Debian bookworm image with python3.11 and its venv module. The default is
# the official slim image; where no registry can be reached, `make image` passes the base it
# makes with debootstrap (hack/image/base.sh: bookworm minbase + Debian's python3).
# docs/operator.md, "The image".

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A package index mirror for pip, when the build machine needs one (build stage only: the
# runtime stage does not inherit it).
ARG PIP_INDEX_URL
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
COPY operator/ operator/
# The optional secret `pip-ca` is a CA bundle for a TLS-intercepting proxy in front of the
# index; a secret mount never lands in a layer. pip and setuptools leave the venv at the end,
# so the runtime stage carries no installer.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/plantd \
 && /opt/plantd/bin/pip install --quiet --upgrade pip==25.3 \
 && /opt/plantd/bin/pip install --quiet . \
 && /opt/plantd/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="plantd" \
      org.opencontainers.image.description="plantd: ZeroMQ Majordomo bus, state, identity, gRPC gateway and Kubernetes operator" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
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
