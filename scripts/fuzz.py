"""Property-based fuzzing from the API's own OpenAPI document: no answer may be a server error.

    uv run python scripts/fuzz.py                    # 5,000 cases with a key, 5,000 without
    uv run python scripts/fuzz.py --examples 100     # what CI runs (a bounded run)

It starts the service as `serve` runs it in production (embedded PostgreSQL unless
`--database-url` names a server; the script creates and drops its own database there), publishes
the example schemas, creates a key with every scope, and runs schemathesis against
`/openapi.json` twice: with the key and without. Every generated case is checked with
`not_a_server_error`; the script exits 1 on any 5xx (schemathesis prints the reproducing curl).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import cli, database, free_port, running, serve_command, service_env  # noqa: E402
from service.auth.service import Scope  # noqa: E402

SCOPES = ",".join(scope.value for scope in Scope)  # every scope: every operation is reached


def schemathesis(base: str, examples: int, headers: list[str], seed: int) -> tuple[int, int]:
    """Run schemathesis; (cases generated, failures)."""
    program = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    command = [
        program, "run", f"{base}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", str(examples),
        "--seed", str(seed),
        "--request-timeout", "30",
        "--continue-on-failure",
        "--suppress-health-check", "all",
        *headers,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    print(output[-6000:])
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", output))
    failures = 1 if result.returncode != 0 else 0
    return generated, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument("--examples", type=int, default=800, help="examples per operation")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()

    log = Path(tempfile.mkdtemp(prefix="consent-fuzz-")) / "service.log"
    totals: dict[str, int] = {}
    failed = False
    with database(args.database_url, keep=False) as db_url:
        env = service_env(db_url)
        # Failed keys are limited per client; the run without a key must reach every handler.
        env["CONSENT_AUTH_FAILURE_LIMIT"] = "100000000"
        cli(env, "migrate")
        for name in ("itsailor", "ailabrix"):
            cli(env, "schema", "publish", f"examples/schemas/{name}.yaml")
        created = cli(env, "keys", "create", "--name", "fuzz", "--scopes", SCOPES, "--json")
        secret = json.loads(created.strip().splitlines()[-1])["secret"]
        port = free_port()
        with running(serve_command(port, 1), env, port, "/readyz", log) as server:
            for label, headers in (
                ("with a key of every scope", ["-H", f"Authorization: Bearer {secret}"]),
                ("without a key", []),
            ):
                print(f"== {label}", flush=True)
                generated, failures = schemathesis(server.base, args.examples, headers, args.seed)
                totals[label] = generated
                failed |= bool(failures)
    errors = [line for line in log.read_text().splitlines() if '"level":"error"' in line]
    for label, generated in totals.items():
        print(f"{label}: {generated} cases")
    print(f"server error log lines: {len(errors)} (log: {log})")
    if failed or errors:
        sys.exit(1)
    print("0 server errors")


if __name__ == "__main__":
    main()
