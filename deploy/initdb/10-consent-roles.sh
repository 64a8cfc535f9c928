#!/bin/sh
# Run once by the postgres image on a new data volume (docker-entrypoint-initdb.d): the roles the
# service needs besides the owner (POSTGRES_USER, which migrates):
#   consent_api        NOLOGIN: what the service may do; the migrations grant it (0005)
#   $API_DB_USER       LOGIN, a member of consent_api, owning nothing: what `api` connects as
# Roles belong to the whole server: both are created only if missing. On a volume made before
# this script existed, run the same statements once by hand (README, Operations).
set -eu
: "${API_DB_USER:?set API_DB_USER in .env}"
: "${API_DB_PASSWORD:?set API_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v api_user="$API_DB_USER" -v api_password="$API_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE consent_api NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'consent_api')\gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'api_user', :'api_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'api_user')\gexec
SELECT format('GRANT consent_api TO %I', :'api_user')\gexec
SQL
