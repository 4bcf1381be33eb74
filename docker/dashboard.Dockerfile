# The web dashboard (`metalearn ui`): a gRPC client of the gateway, no database, no torch.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt requirements-ui.txt ./
RUN pip install --no-cache-dir -r requirements.txt -r requirements-ui.txt

COPY pyproject.toml README.md ./
COPY metalearn ./metalearn
COPY dashboard ./dashboard
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 metalearn
USER 10001

EXPOSE 8080
ENTRYPOINT ["metalearn", "ui", "--listen", "0.0.0.0:8080"]
