# syntax=docker/dockerfile:1
# The operator image: kopf runs the handlers, the data API and the engine in one process.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLJOB_DATA_DIR=/var/lib/mljob \
    MLJOB_HTTP_ADDR=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080 8081 8082
ENTRYPOINT ["kopf"]
CMD ["run", "-m", "mljob_operator", "--all-namespaces", "--standalone", "--liveness=http://0.0.0.0:8081/healthz"]
