# syntax=docker/dockerfile:1
# The site's hub image: Zero to JupyterHub's own hub image (matching the
# chart version in helm/insitu-node/Chart.yaml) plus insitu, for insitu's OIDC
# authenticator, which records each user's insitu role in the node's account
# store and audits every login.
#
#   docker build -f docker/hub.Dockerfile -t registry.example/insitu/hub:0.1.0 .
#
# Pin the base image by digest in your registry (--build-arg HUB_IMAGE=...@sha256:...).
ARG HUB_IMAGE=quay.io/jupyterhub/k8s-hub:4.4.0
FROM ${HUB_IMAGE}
USER root
COPY docker/requirements-hub.txt /tmp/requirements.txt
COPY pyproject.toml README.md /tmp/insitu-src/
COPY insitu /tmp/insitu-src/insitu
COPY datasets /tmp/insitu-src/datasets
COPY hub /tmp/insitu-src/hub
COPY kernels /tmp/insitu-src/kernels
COPY federation /tmp/insitu-src/federation
COPY widgets /tmp/insitu-src/widgets
# The base image already has JupyterHub and OAuthenticator; add only what the
# authenticator imports (insitu itself without its data-science dependencies).
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps /tmp/insitu-src \
 && rm -rf /tmp/insitu-src /tmp/requirements.txt \
 && python -c "import insitu.hub.authenticator"
USER 1000
