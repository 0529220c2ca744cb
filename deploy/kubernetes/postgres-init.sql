-- A second database for MLflow's backend store (the Optuna study lives in "optuna"), and a third for
-- the users and permissions of MLflow's basic-auth app (deploy/mlflow/basic_auth.ini).
CREATE DATABASE mlflow OWNER sweeps;
CREATE DATABASE mlflow_auth OWNER sweeps;
