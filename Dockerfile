# A server image: `docker build -t lifelong .` then
#   docker run -p 8000:8000 -v "$PWD/models/intents:/model" lifelong
# serves the model directory mounted at /model (POST /predict, GET /health, GET /info, GET /openapi.json).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# torch first and pinned, from the CPU index: resolved later by another package it would pull a multi-GB CUDA build
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home lifelong
USER lifelong
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
ENTRYPOINT ["lifelong"]
CMD ["serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
