# syntax=docker/dockerfile:1
# One image for every `sketchgen` command (ingest, learn, create, status, export, ...).
#   docker build -t sketchgen:0.1.0 .
#   docker run --rm sketchgen:0.1.0 --help
# Build stage: a virtualenv with CPU-only torch and the project; the runtime stage copies only that venv,
# so pip's caches, the source tree and any build tool never reach the final image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sketchgen
ENV PATH=/opt/sketchgen/bin:$PATH
# CPU wheels of torch (~200 MB) instead of PyPI's default CUDA build (several GB).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sketch_store ./sketch_store
COPY ingest ./ingest
COPY learner ./learner
COPY sketchgen ./sketchgen
COPY service_http ./service_http
# torch is already satisfied, so this resolves only the project's other dependencies (all binary wheels).
# Byte-compile ahead of time, since the root filesystem is read-only at run time (torch's test helpers
# include Python 3.12-only syntax and are skipped).
RUN pip install --only-binary=:all: --no-binary=sketchgen . \
 && python -m compileall -q -x '/torch/testing/_internal/' /opt/sketchgen \
 && sketchgen --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sketchgen" \
      org.opencontainers.image.description="Learn a generative network from a live data stream's sketch" \
      org.opencontainers.image.licenses="Apache-2.0"
# Fixed numeric ids so Kubernetes' runAsNonRoot can check them without reading /etc/passwd.
RUN groupadd --system --gid 10001 sketchgen \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/sketchgen --create-home --shell /usr/sbin/nologin sketchgen
COPY --from=build /opt/sketchgen /opt/sketchgen
ENV PATH=/opt/sketchgen/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1
USER 10001:10001
WORKDIR /home/sketchgen
# 8000: learner HTTP (/metrics /healthz /readyz /sample /status); 9108: an ingest worker's /metrics.
EXPOSE 8000 9108
ENTRYPOINT ["sketchgen"]
CMD ["--help"]
