# A trainer daemon: PyTorch, and nothing but the gateway's address to reach.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

# torch and torchvision (at the versions of requirements-trainer.txt) from PyTorch's
# CPU-only index by default: no CUDA libraries, an image gigabytes smaller. The GPU
# trainer (docker-compose.yml, profile "gpu") builds with TORCH_INDEX_URL set to PyPI,
# whose Linux torch brings CUDA. Their dependencies come from PyPI in the next step.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-trainer.txt ./
RUN grep -E '^(torch|torchvision)==' requirements-trainer.txt > torch.txt \
    && pip install --no-cache-dir --no-deps --index-url "$TORCH_INDEX_URL" -r torch.txt \
    && pip install --no-cache-dir -r requirements.txt -r requirements-trainer.txt \
    && rm torch.txt

COPY pyproject.toml README.md ./
COPY metalearn ./metalearn
COPY trainer ./trainer
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --create-home metalearn
USER 10001
WORKDIR /home/metalearn

EXPOSE 50052
# Inside a container the trainer must listen beyond loopback; the cache stays in $HOME.
# Its token and TLS files come at run time, named by METALEARN_* variables
# (docker-compose.yml, docker/README.md); the image holds no secret.
ENTRYPOINT ["metalearn", "trainer", "--listen", "0.0.0.0:50052", "--cache-dir", "/home/metalearn/cache"]
