#!/bin/sh
# A read-only PostgreSQL role for Grafana's datasource (deploy/grafana/provisioning/postgres/datasource.yml).
# The postgres image runs this once, when it initialises an empty data directory (/docker-entrypoint-initdb.d),
# before aigw-proxy has created any table: default privileges grant SELECT on every table the owner creates later
# (the proxy's migrations, partitions included). Elsewhere run it by hand with psql's usual PG* variables set:
#   POSTGRES_USER=<superuser> POSTGRES_DB=aigw AIGW_DB_OWNER=aigw AIGW_GRAFANA_DB_PASSWORD=… sh grafana-reader.sh
# Anyone with the datasource can read every prompt: give Grafana access to the people who may.
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader="${AIGW_GRAFANA_DB_USER:-aigw_grafana}" \
  -v reader_password="$AIGW_GRAFANA_DB_PASSWORD" \
  -v owner="${AIGW_DB_OWNER:-$POSTGRES_USER}" \
  -v db="$POSTGRES_DB" <<'EOSQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '30s';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
EOSQL
