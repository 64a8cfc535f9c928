"""docs/guarantees.md, "No raw IP address is stored or logged": no raw IP address ever reaches a
log line or a metric label."""

from __future__ import annotations

import io

import httpx

from tests.conftest import CLIENT_IP

FORWARDED_IP = "198.51.100.203"
FORWARDED_V6 = "2001:db8::cafe:77"


async def test_client_ips_never_reach_the_logs(
    client: httpx.AsyncClient, captured_logs: io.StringIO, metrics_key: dict[str, str]
) -> None:
    headers = {
        "X-Forwarded-For": f"{FORWARDED_IP}, {FORWARDED_V6}",
        "Forwarded": f'for="[{FORWARDED_V6}]";proto=https',
        "X-Real-IP": FORWARDED_IP,
    }
    for path in ("/healthz", "/readyz", "/metrics", "/no/such/route"):
        await client.get(path, headers=headers | metrics_key)
    await client.post("/healthz", headers=headers)  # 405
    await client.get("/healthz", headers={**headers, "X-Request-ID": FORWARDED_IP})

    logs = captured_logs.getvalue()
    assert '"route":"/healthz"' in logs  # the access log did run and was captured
    for address in (CLIENT_IP, FORWARDED_IP, FORWARDED_V6, "cafe:77"):
        assert address not in logs

    metrics = (await client.get("/metrics", headers=metrics_key)).text
    for address in (CLIENT_IP, FORWARDED_IP, FORWARDED_V6):
        assert address not in metrics
