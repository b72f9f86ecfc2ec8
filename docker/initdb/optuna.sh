#!/bin/sh
# The Optuna role of the shared stack (docker/compose.optuna-remote.yaml): it owns the database
# `optuna` and cannot connect to the MLflow databases (runs, users) nor create roles or databases.
# Run by the postgres image at the first initialisation of its volume, or by hand (idempotent).
# Needs: POSTGRES_USER (the superuser), OPTUNA_DB_PASSWORD; optional OPTUNA_DB_USER (optuna),
# MLFLOW_DATABASE (mlflow), CALOLAB_AUTH_DATABASE (mlflow_auth); PGHOST/PGPORT for another server.
set -eu
: "${OPTUNA_DB_PASSWORD:?set OPTUNA_DB_PASSWORD in docker/server.env}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v role="${OPTUNA_DB_USER:-optuna}" -v pw="$OPTUNA_DB_PASSWORD" \
  -v mlflow_db="${MLFLOW_DATABASE:-mlflow}" -v auth_db="${CALOLAB_AUTH_DATABASE:-mlflow_auth}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')\gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SELECT format('CREATE DATABASE optuna OWNER %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'optuna')\gexec
SELECT format('CREATE DATABASE %I', :'mlflow_db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db')\gexec
SELECT format('CREATE DATABASE %I', :'auth_db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'auth_db')\gexec
-- every role may connect to every database by default (PUBLIC); only the owner may now
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"auth_db" FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
REVOKE ALL ON DATABASE optuna FROM PUBLIC;
GRANT ALL ON DATABASE optuna TO :"role";
SQL
echo "optuna.sh: role ${OPTUNA_DB_USER:-optuna} owns database optuna"
