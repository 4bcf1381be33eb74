# The gateway: gRPC in front of PostgreSQL. No torch here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md ./
COPY metalearn ./metalearn
COPY learning ./learning
COPY gateway ./gateway
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 metalearn
USER 10001

EXPOSE 50051
# Inside a container the gateway must listen beyond loopback. TLS, tokens and the database
# password come at run time as files named by METALEARN_* variables (docker-compose.yml,
# docker/README.md); the image holds no secret.
ENTRYPOINT ["metalearn", "gateway", "--listen", "0.0.0.0:50051"]
