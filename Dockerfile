# realtime-tts server image.
#
# CPU (default):  docker build -t realtime-tts:cpu .
# GPU (CUDA):     docker build -t realtime-tts:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# Ray / KubeRay:  add --build-arg PIP_EXTRAS=[cluster] (ray[serve], boto3 for the S3 voice store)
#
# torch is installed first from TORCH_INDEX_URL (the PyTorch CPU or CUDA wheel index; the CUDA
# wheels carry their own CUDA runtime, so the same slim base image serves both), then the project,
# whose torch>=2.13,<2.14 requirement that wheel already satisfies.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_EXTRAS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY realtime_tts ./realtime_tts
RUN pip install ".${PIP_EXTRAS}" && python -c "import realtime_tts.server.voices, av, soxr"

# Run unprivileged; voices live in /data, the IndexTTS-2 checkpoint is mounted at /checkpoints.
RUN useradd --create-home --uid 1000 tts && mkdir -p /data /checkpoints && chown tts:tts /data
USER tts
ENV REALTIME_TTS_HOST=0.0.0.0 \
    REALTIME_TTS_PORT=8000 \
    REALTIME_TTS_DATA_DIR=/data \
    REALTIME_TTS_CHECKPOINTS=/checkpoints \
    REALTIME_TTS_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000

# /health answers 200 once the engine is loaded and warmed up (503 before).
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)" || exit 1

CMD ["realtime-tts", "serve"]
