"""The monitoring pack in deploy/monitoring: its queries name only metrics the service exports,
and its rules pass promtool (when the machine has it; CI installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
METRIC = re.compile(r"\b(consent_[a-z_]+|up)\b(?!:)")


def queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]] + [
        rule["expr"] for group in rules["groups"] for rule in group["rules"]
    ]


async def test_every_query_names_a_metric_the_service_exports(
    client: httpx.AsyncClient, metrics_key: dict[str, str]
) -> None:
    await client.get("/healthz")
    exported = (await client.get("/metrics", headers=metrics_key)).text
    names = {line.split()[2] for line in exported.splitlines() if line.startswith("# TYPE ")}
    series = names | {
        f"{name}_{suffix}" for name in names for suffix in ("bucket", "sum", "count", "total")
    }
    used = {name for query in queries() for name in METRIC.findall(query)} - {"up"}
    assert used
    assert used <= series, sorted(used - series)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) absent")
def test_the_rules_pass_promtool() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run(
            ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
