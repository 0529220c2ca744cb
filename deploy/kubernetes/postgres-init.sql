-- A second database for MLflow's backend store (the Optuna study lives in "optuna").
CREATE DATABASE mlflow OWNER sweeps;
