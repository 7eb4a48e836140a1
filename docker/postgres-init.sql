-- Run once, when the postgres service first creates its data volume: a second database for the
-- MLflow server (Optuna's tables live in "optuna", made by POSTGRES_DB; both keep an
-- alembic_version table, so they cannot share one database).
CREATE DATABASE mlflow;
