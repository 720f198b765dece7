# syntax=docker/dockerfile:1
# The node services image: the access, gate and airlock services, the ingest,
# the Flower SuperNode of a site and the coordinator's SuperLink.
#
#   docker build -f docker/node.Dockerfile -t registry.example/insitu/node:0.1.0 .
#
# Python packages are pinned to what the tests ran against
# (docker/requirements-node.txt, written by docker/lock.py). Pin the base image
# by digest in your registry: --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/insitu
COPY docker/requirements-node.txt /tmp/requirements.txt
# Every package is pinned with its hashes and listed: --no-deps keeps anything unlisted out.
RUN /opt/insitu/bin/pip install --no-deps --only-binary=:all: --require-hashes -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY insitu /src/insitu
COPY datasets /src/datasets
COPY hub /src/hub
COPY kernels /src/kernels
COPY federation /src/federation
COPY widgets /src/widgets
RUN /opt/insitu/bin/pip install --no-deps /src \
 && /opt/insitu/bin/python -c "import insitu.hub.gate_service, insitu.federation.cli" \
 && /opt/insitu/bin/insitu --help > /dev/null

FROM ${PYTHON_IMAGE}
# The user the chart runs every node pod as (security.runAsUser); no shell login.
RUN groupadd --gid 10001 insitu \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin insitu \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/insitu
COPY --from=build /opt/insitu /opt/insitu
ENV PATH=/opt/insitu/bin:/usr/local/bin:/usr/bin:/bin \
    INSITU_HOME=/var/lib/insitu \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
CMD ["insitu", "--help"]
