# syntax=docker/dockerfile:1
# gearshift daemon image: `docker build -t gearshift .` (see README, "Container image").
#
# Two stages: the build stage compiles wheels (the oVirt SDK needs gcc and libxml2
# headers) and installs them, pinned by constraints.txt, into a virtual environment; the
# runtime stage gets only that environment, libxml2 and a non-root user. No test tools,
# no sources, no secrets: configuration, policies and secret files are mounted at run
# time. deploy/image/build-and-smoke.sh builds and runs this file in CI.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Which provider SDKs to include (pyproject extras); runtime dependencies only.
ARG EXTRAS=vsphere,ovirt,ec2,postgres
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libxml2-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/gearshift \
 && /opt/gearshift/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, at the versions pinned in constraints.txt (what the tests ran with;
# see deploy/image/freeze_constraints.py): from pyproject.toml alone, so this slow layer
# (it compiles the oVirt SDK) is rebuilt only when the dependencies change, not on every
# source edit. The empty package installed here only pulls them in; it is removed again.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p daemon && touch README.md \
 && /opt/gearshift/bin/pip install --constraint constraints.txt ".[${EXTRAS}]" \
 && /opt/gearshift/bin/pip uninstall --yes gearshift
COPY README.md ./
COPY daemon ./daemon
RUN /opt/gearshift/bin/pip install --no-deps --constraint constraints.txt ".[${EXTRAS}]" \
 && /opt/gearshift/bin/pip check \
 && /opt/gearshift/bin/gearshift --version

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxml2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gearshift \
 && useradd --system --uid 10001 --gid gearshift --home-dir /var/lib/gearshift \
      --shell /usr/sbin/nologin gearshift \
 && install -d -o gearshift -g gearshift -m 0700 /var/lib/gearshift \
 && install -d -m 0755 /etc/gearshift
COPY --from=build /opt/gearshift /opt/gearshift
# The API listens on all of the container's interfaces so a published port reaches it;
# publish it to the host's loopback only (-p 127.0.0.1:9310:9310) unless Prometheus
# scrapes from elsewhere. The operator calls need the bearer token either way.
ENV PATH=/opt/gearshift/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GEARSHIFT_HTTP__HOST=0.0.0.0 \
    GEARSHIFT_URL=http://127.0.0.1:9310 \
    GEARSHIFT_LOG__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/gearshift
VOLUME ["/var/lib/gearshift"]
EXPOSE 9310
# `gearshift health` GETs /healthz ($GEARSHIFT_URL): 0 while the reconcile loop is alive.
# If you move the API (GEARSHIFT_HTTP__PORT), set GEARSHIFT_URL to match.
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
  CMD ["gearshift", "health", "--timeout", "5s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gearshift", "run"]
CMD ["--config", "/etc/gearshift/config.yaml"]
