"""The DPV export (docs/dpv.md): JSON-LD that a JSON-LD processor (PyLD) expands with no network,
into W3C DPV 2.1 consent records: status per category, when, until when, the pseudonymous data
subject, the notice (schema version and its hash), purposes and the controller the schema names."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
from pyld import jsonld  # type: ignore[import-untyped]

from service.consent_schema.document import ConsentSchemaDocument
from tests.factories import api_key, bearer, event, example, published

DPV = "https://w3id.org/dpv#"
DCT = "http://purl.org/dc/terms/"
SCHEMA = "https://schema.org/"
XSD_DATETIME = "http://www.w3.org/2001/XMLSchema#dateTime"
RDF_VALUE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#value"


def no_network(url: str, options: dict[str, Any]) -> None:
    raise AssertionError(f"the export made the processor fetch {url}")


def flattened(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every node of the expanded, flattened graph, by @id (blank nodes included)."""
    jsonld.set_document_loader(no_network)
    return {node["@id"]: node for node in jsonld.flatten(document)}


def one(node: dict[str, Any], predicate: str) -> Any:
    [value] = node[predicate]
    return value


async def test_a_dpv_export_expands_into_consent_records(
    client: httpx.AsyncClient, db_url: str
) -> None:
    version = await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    subject = uuid.uuid4()
    sent = [
        event("save-selection", subject_id=subject, categories={"analytics": True}),
        event("withdraw", subject_id=subject),
    ]
    answers = [await client.post("/v1/properties/itsailor/consent-events", json=s) for s in sent]
    assert [answer.status_code for answer in answers] == [201, 201]

    response = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject), "format": "dpv"}, headers=reader
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ld+json"
    assert response.headers["content-disposition"].endswith('.jsonld"')
    raw = response.content
    document = json.loads(raw)
    nodes = flattened(document)

    selection, withdrawal = (answer.json() for answer in answers)
    record = nodes[f"urn:uuid:{selection['event_id']}"]
    assert record["@type"] == [f"{DPV}ConsentRecord"]
    assert one(record, f"{DCT}conformsTo") == {
        "@id": "https://w3id.org/dpv/schema/dpv-27560#record"
    }
    assert one(record, f"{DPV}hasDataSubject") == {"@id": f"urn:uuid:{subject}"}
    assert one(nodes[f"urn:uuid:{subject}"], f"{DCT}identifier") == {"@value": str(subject)}
    assert one(record, f"{DPV}hasNotice") == {"@id": "urn:consent-service:notice:itsailor:1"}

    # One process per optional category, each with its own status, time and expiry.
    statuses = {}
    for process in record[f"{DPV}hasProcess"]:
        node = nodes[process["@id"]]
        purpose = one(node, f"{DPV}hasPurpose")["@id"]
        status = nodes[one(node, f"{DPV}hasConsentStatus")["@id"]]
        statuses[purpose.rsplit(":", 1)[1]] = status["@type"]
        assert one(status, f"{DPV}isIndicatedAtTime") == {
            "@value": selection["recorded_at"],
            "@type": XSD_DATETIME,
        }
        duration = nodes[one(status, f"{DPV}hasDuration")["@id"]]
        assert duration["@type"] == [f"{DPV}UntilTimeDuration"]
        assert one(duration, RDF_VALUE) == {
            "@value": selection["expires_at"],
            "@type": XSD_DATETIME,
        }
        assert one(status, f"{DPV}isIndicatedBy") == {"@id": f"urn:uuid:{subject}"}
    assert statuses == {
        "analytics": [f"{DPV}ConsentGiven"],
        "functional": [f"{DPV}ConsentRefused"],
        "marketing": [f"{DPV}ConsentRefused"],
    }
    withdrawn = nodes[f"urn:uuid:{withdrawal['event_id']}"]
    for process in withdrawn[f"{DPV}hasProcess"]:
        status = nodes[one(nodes[process["@id"]], f"{DPV}hasConsentStatus")["@id"]]
        assert status["@type"] == [f"{DPV}ConsentWithdrawn"]
    # The receipt the 201 carried travels with its record.
    assert one(record, "urn:consent-service:term:receipt")["@value"] == selection["receipt"]

    # The notice: the version the person was shown, with its hash, purposes and controller.
    notice = nodes["urn:consent-service:notice:itsailor:1"]
    assert notice["@type"] == [f"{DPV}ConsentNotice"]
    assert one(notice, "urn:consent-service:term:contentSha256")["@value"] == version.content_hash
    assert one(notice, f"{DCT}source") == {"@id": "https://itsailor.io/cookies"}
    assert len(notice[f"{DPV}hasPurpose"]) == 4
    analytics = nodes["urn:consent-service:purpose:itsailor:1:analytics"]
    assert set(analytics["@type"]) == {f"{DPV}Purpose", f"{DPV}ServiceUsageAnalytics"}
    controller = nodes[one(notice, f"{DPV}hasDataController")["@id"]]
    assert controller["@type"] == [f"{DPV}DataController"]
    assert one(controller, f"{DPV}hasName")["@value"] == "Michal Jatczak T/A ITSailor"
    contact = nodes[one(controller, f"{SCHEMA}contactPoint")["@id"]]
    assert one(contact, f"{SCHEMA}email")["@value"] == "dsr@itsailor.io"
    assert one(controller, f"{SCHEMA}address")["@value"].endswith("Gzira GZR 1564, Malta")

    # Signed like the JSON export: every byte before the closing signature.
    claims = json.loads(jsonld_payload(document["signature"]))
    assert hashlib.sha256(raw[: claims["bytes"]]).hexdigest() == claims["sha256"]


def jsonld_payload(jws: str) -> bytes:
    payload = jws.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def test_a_controller_must_be_named_or_reachable() -> None:
    content = example("ailabrix").model_dump(mode="json", exclude_none=True)
    content["controller"] = {"address": "somewhere"}
    with pytest.raises(ValueError, match="needs a name, an email or a contact_url"):
        ConsentSchemaDocument.model_validate(content)
