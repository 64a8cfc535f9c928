"""The CSV export does not let a visitor's text run as a spreadsheet formula (docs/evidence.md,
"Exports"): a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`;
the JSON export keeps the exact values."""

from __future__ import annotations

import csv
import io
import json
import uuid

import httpx

from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
HARMLESS = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
# One event each: (User-Agent header, tcf_string, gpp_string), every dangerous first character
# among them, and one event of harmless values (a `-` or `=` inside text is not a formula).
SENT = [
    ('=HYPERLINK("http://evil","x")', "=1+2", "@SUM(1)"),
    ("+1+2", "-2+3", "\t=1+2"),
    ("@SUM(A1)", "\r=1+2", "-1"),
    (HARMLESS, "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", "DBABMA~CPXxRfAPXxRfAAfKABENB=="),
]
COLUMNS = ("user_agent", "tcf_string", "gpp_string")
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


async def test_csv_cells_never_start_a_formula_and_json_keeps_the_values(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    subject = uuid.uuid4()
    for user_agent, tcf, gpp in SENT:
        response = await client.post(
            EVENTS,
            json=event(subject_id=subject, tcf_string=tcf, gpp_string=gpp),
            headers={"User-Agent": user_agent},
        )
        assert response.status_code == 201, response.text

    answer = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject), "format": "csv"}, headers=reader
    )
    assert answer.status_code == 200, answer.text
    rows = list(csv.DictReader(io.StringIO(answer.text, newline="")))
    assert [tuple(row[name] for name in COLUMNS) for row in rows] == [
        tuple(f"'{value}" if value.startswith(DANGEROUS) else value for value in sent)
        for sent in SENT
    ]
    assert {value[0] for sent in SENT[:3] for value in sent} == set(DANGEROUS)
    harmless = rows[-1]
    assert harmless["user_agent"] == HARMLESS
    assert json.loads(harmless["choices"])["necessary"] is True  # other cells as before
    assert harmless["schema_version"] == "1"

    evidence = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject)}, headers=reader
    )
    assert evidence.status_code == 200, evidence.text
    assert [tuple(item[name] for name in COLUMNS) for item in evidence.json()["events"]] == SENT
