# One image for every role: the coordinator (API, dashboard, search runners), the Ray head and the
# Ray workers. Ray needs the same Python, Ray and code on the driver and on every node, so they all
# run this image with different commands (see docker-compose.yml).
#
#   docker build -t evonorm-search .                                          # CPU torch
#   docker build -t evonorm-search:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .    # CUDA torch
FROM python:3.11-slim

# torch is installed first from the index of the wanted build (CPU or a CUDA version); the
# package's own dependency is a range ("torch>=2.4"), so pip keeps this build afterwards.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY primitives/ primitives/
COPY workers/ workers/
COPY evonorm_search/ evonorm_search/
COPY db/ db/
COPY api/ api/
# Editable on purpose: the dashboard's static files, the Alembic script template and other data
# files live next to the code and are served from /app, with no package-data list to keep in sync.
RUN pip install -e .

# Unprivileged user; /data holds the exported layers (a volume) and an optional CIFAR copy.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin evonorm \
    && mkdir -p /data/exports /data/cifar \
    && chown -R evonorm:evonorm /data
USER evonorm
ENV EVONORM_EXPORT_DIR=/data/exports \
    HOME=/home/evonorm

EXPOSE 8000
# The coordinator by default; compose overrides the command for the Ray nodes.
CMD ["evonorm-search", "serve", "--host", "0.0.0.0", "--port", "8000"]
