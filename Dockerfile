# The model server alone (continual-serve): int8 / fp32 ONNX on onnxruntime under gunicorn, models from the MLflow
# registry at start and at each swap, never from the image. No torch, transformers or avalanche.
#
#   docker build -t continual-serve .
#   docker run --read-only -p 8080:8080 -e MLFLOW_TRACKING_URI=http://mlflow.internal:5000 continual-serve \
#       --model sentiment=models:/sentiment@champion
#
# Writable paths are the declared volumes only: /tmp (model downloads, PROMETHEUS_MULTIPROC_DIR; give it a tmpfs,
# e.g. --tmpfs /tmp or an emptyDir with medium: Memory) and /var/lib/continual (captured texts, when capture_rate
# > 0). tests/test_serve_install.py runs this file's install and start commands in a virtual environment.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_NO_CACHE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN pip install --constraint requirements.lock uv
COPY deploy/continual-serve deploy/continual-serve
COPY service service
RUN sh deploy/continual-serve/install.sh /opt/continual /usr/local/bin/python3.11

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/continual /opt/continual
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        continual \
 && mkdir -p /var/lib/continual \
 && chown 10001:10001 /var/lib/continual
ENV PATH=/opt/continual/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    CONTINUAL_CAPTURE_DIR=/var/lib/continual/capture
VOLUME ["/tmp", "/var/lib/continual"]
USER 10001:10001
EXPOSE 8080
# Ready once a model is loaded (the liveness probe is /v2/health/live); the first load downloads the model.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
# Workers and compute threads explicitly: in a container the CPU limit is a quota, not an affinity mask, so the
# defaults (one worker per usable core) would see the node's cores.
ENTRYPOINT ["continual-serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2", "--threads", "4", \
            "--set", "compute_threads=1", "--poll-seconds", "30"]
CMD ["--model", "sentiment=models:/sentiment@champion"]
