# The one image docker-compose.yml runs: admmsearch with the PostgreSQL driver (workers), the
# MLflow server (an admmsearch dependency) and the Optuna dashboard. CPU-only torch keeps it
# small; the shipped study files are in studies/.
FROM python:3.11-slim

WORKDIR /app
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY admmsearch ./admmsearch
COPY studies ./studies
RUN pip install --no-cache-dir ".[postgres]" "optuna-dashboard>=0.15"
