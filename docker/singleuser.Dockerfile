# syntax=docker/dockerfile:1
# The researcher's image: the single-user server (JupyterLab) with the insitu
# kernel and client library, also used for dask-gateway's schedulers and
# workers. It holds no data and no credentials: the hub passes the gate's URL
# and the researcher's token at start.
#
#   docker build -f docker/singleuser.Dockerfile -t registry.example/insitu/singleuser:0.1.0 .
#
# Packages pinned in docker/requirements-singleuser.txt (docker/lock.py). Pin
# the base image by digest in your registry (--build-arg PYTHON_IMAGE=...@sha256:...).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/insitu
COPY docker/requirements-singleuser.txt /tmp/requirements.txt
RUN /opt/insitu/bin/pip install --no-deps --only-binary=:all: --require-hashes -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY insitu /src/insitu
COPY datasets /src/datasets
COPY hub /src/hub
COPY kernels /src/kernels
COPY federation /src/federation
COPY widgets /src/widgets
RUN /opt/insitu/bin/pip install --no-deps /src \
 && /opt/insitu/bin/insitu kernel install --prefix /opt/insitu \
 && /opt/insitu/bin/python -c "import insitu.kernels.enclave, insitu.widgets"

FROM ${PYTHON_IMAGE}
# z2jh runs user servers as uid 1000 (singleuser.uid) with fsGroup 100.
RUN useradd --uid 1000 --gid 100 --create-home --home-dir /home/jovyan --shell /bin/bash jovyan
COPY --from=build /opt/insitu /opt/insitu
ENV PATH=/opt/insitu/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONUNBUFFERED=1 \
    SHELL=/bin/bash
USER 1000:100
WORKDIR /home/jovyan
EXPOSE 8888
CMD ["jupyterhub-singleuser"]
