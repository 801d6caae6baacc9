# syntax=docker/dockerfile:1
# mfms-bo images (deploy/README.md). Two targets:
#
#   server (default)  CPU torch. `mfms serve` on 0.0.0.0:8000; the same image runs the
#                     simulate and command workers (docker-compose.yml uses it for both).
#   gpu-worker        CUDA torch. `mfms worker --backend torch --data /data`, server URL
#                     from $MFMS_SERVER_URL.
#
#   docker build -t mfms-bo .
#   docker build --target gpu-worker -t mfms-bo-gpu .
#   docker build --target gpu-worker -t mfms-bo-gpu \
#       --build-arg TORCH_GPU_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#
# The CPU torch goes in before the project so that pip, resolving botorch's dependencies,
# finds torch satisfied and does not pull the multi-GB CUDA build into the server image.

ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VERSION=2.13.0

# ---- wheel: the project built once; the runtime stages install the wheel, not the tree.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mfms_bo mfms_bo
COPY mfms_client mfms_client
COPY mfms_cli mfms_cli
COPY server server
COPY workers workers
COPY migrations migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime: what both images share: a non-root user and its folders.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# /app: the working directory (a default SQLite file, the command backend's trial folders);
# /data: prepared domains for the torch backend (mount a volume there).
RUN groupadd --system --gid 10001 mfms \
 && useradd --system --uid 10001 --gid mfms --create-home --home-dir /home/mfms mfms \
 && mkdir -p /app /data \
 && chown mfms:mfms /app /data
WORKDIR /app

# ---- gpu-worker: CUDA torch (PyPI's Linux wheels bundle the CUDA runtime; the host needs
# only the NVIDIA driver and container toolkit). TORCH_GPU_INDEX_URL picks another CUDA
# build, e.g. https://download.pytorch.org/whl/cu126.
FROM runtime AS gpu-worker
ARG TORCH_VERSION
ARG TORCH_GPU_INDEX_URL=
# torch.compile's Triton kernels build a small C launcher at run time: they need a compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_GPU_INDEX_URL:+--index-url $TORCH_GPU_INDEX_URL}
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install /wheels/*.whl
USER mfms
CMD ["mfms", "worker", "--backend", "torch", "--data", "/data", "--gpus", "1"]

# ---- server (the default target, so it comes last): CPU torch.
FROM runtime AS server
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX_URL}"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install /wheels/*.whl
USER mfms
EXPOSE 8000
# --upgrade: Alembic to head before serving (a no-op when the schema is current).
CMD ["mfms", "serve", "--host", "0.0.0.0", "--port", "8000", "--upgrade"]
