# A trainer daemon: PyTorch, and nothing but the gateway's address to reach.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt requirements-trainer.txt ./
RUN pip install --no-cache-dir -r requirements.txt -r requirements-trainer.txt

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
