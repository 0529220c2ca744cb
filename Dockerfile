# One image for the MLflow tracking server and the sweep workers.
# The extra `server`: mlflow[auth] (the basic-auth app of `mlflow server --app-name basic-auth`) and
# psycopg2 for PostgreSQL. deploy/mlflow: the basic-auth settings and add_user.py (docker-compose.yml,
# deploy/kubernetes).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nncore ./nncore
COPY sweeps ./sweeps
COPY examples ./examples
RUN pip install ".[server]"
COPY deploy/mlflow ./deploy/mlflow
WORKDIR /work
CMD ["sweeps", "--help"]
