"""The DPV export (`format=dpv`): each event as a W3C DPV 2.1 consent record in JSON-LD, in the
shape of DPV's guide to ISO/IEC TS 27560:2023 consent records (docs/dpv.md).

The document carries its own `@context` (service/dsr/dpv-context.jsonld: DPV publishes none, so
the prefixes are vendored here), so it expands with no network. A record per event, then the
notices (the schema versions, with their hash), purposes (the categories) and controllers they
refer to; the closing `signature` is the JSON export's (docs/evidence.md, "Exports"): it signs
the bytes, and a JSON-LD processor leaves it out of the graph.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from service.consent_schema.service import PublishedVersion, SchemaCatalog

CONTEXT: dict[str, Any] = json.loads(Path(__file__).with_name("dpv-context.jsonld").read_bytes())[
    "@context"
]
URN = "urn:consent-service"

# A decision's status per optional category (DPV 2.1 has no "partially given": each category is
# a process of its own, given or refused).
GIVEN, REFUSED = "dpv:ConsentGiven", "dpv:ConsentRefused"
WITHDRAWN, REQUESTED = "dpv:ConsentWithdrawn", "dpv:ConsentRequested"
INDICATION = {
    "banner": "the consent banner: {event_type}",
    "signal": "a browser privacy signal ({signals}) the policy records as a refusal",
    "dsr": "a request in writing, entered by the privacy team ({entered_by})",
}


def notice_iri(property_name: str, version: int) -> str:
    return f"{URN}:notice:{property_name}:{version}"


def purpose_iri(property_name: str, version: int, key: str) -> str:
    return f"{URN}:purpose:{property_name}:{version}:{key}"


def controller_iri(property_name: str, version: int) -> str:
    return f"{URN}:controller:{property_name}:{version}"


def _status(item: dict[str, Any], key: str) -> str:
    if item["event_type"] == "withdraw":
        return WITHDRAWN
    if item["event_type"] == "re-prompt":
        return REQUESTED
    return GIVEN if item["effective"].get(key) else REFUSED


def record(item: dict[str, Any], version: PublishedVersion) -> dict[str, Any]:
    """One exported event (export.py's item) as a dpv:ConsentRecord."""
    property_name, number = item["property"], item["schema_version"]
    subject = item["subject_id"]
    method = INDICATION[item["source"]].format(
        event_type=item["event_type"],
        signals=", ".join(item["signals"]["applied"]).upper() or "none",
        entered_by=item["entered_by"],
    )
    indicated: dict[str, Any] = {
        "dpv:isIndicatedAtTime": item["recorded_at"],
        "dpv:hasIndicationMethod": method,
    }
    if subject is not None:
        indicated["dpv:isIndicatedBy"] = {"@id": f"urn:uuid:{subject}"}
    if item["expires_at"] is not None:
        indicated["dpv:hasDuration"] = {
            "@type": "dpv:UntilTimeDuration",
            "rdf:value": {"@value": item["expires_at"], "@type": "xsd:dateTime"},
        }
    node: dict[str, Any] = {
        "@id": f"urn:uuid:{item['event_id']}",
        "@type": "dpv:ConsentRecord",
        "dct:conformsTo": "dpv-27560:record",
        "dct:identifier": item["event_id"],
        "dct:created": item["recorded_at"],
        "dpv:hasNotice": {"@id": notice_iri(property_name, number)},
        "dpv:hasProcess": [
            {
                "@type": "dpv:Process",
                "dpv:hasPurpose": {"@id": purpose_iri(property_name, number, key)},
                "dpv:hasConsentStatus": {"@type": _status(item, key), **indicated},
            }
            for key in sorted(version.optional)
        ],
        "consent:eventType": item["event_type"],
    }
    if subject is not None:  # an anonymised record names no one
        node["dpv:hasDataSubject"] = {
            "@id": f"urn:uuid:{subject}",
            "@type": "dpv:DataSubject",
            "dct:identifier": subject,
        }
    if version.content.get("controller"):
        node["dpv:hasDataController"] = {"@id": controller_iri(property_name, number)}
    receipt = item.get("receipt")
    if receipt and "jws" in receipt:
        node["consent:receipt"] = receipt["jws"]
    elif receipt:  # the receipt it names is not held: said, as in the JSON export
        node["consent:receiptProblem"] = receipt["problem"]
    return node


def notice(version: PublishedVersion) -> list[dict[str, Any]]:
    """A schema version as the dpv:ConsentNotice the records name, with its purposes and its
    controller."""
    content = version.content
    property_name, number = version.property, version.version
    nodes: list[dict[str, Any]] = [
        {
            "@id": notice_iri(property_name, number),
            "@type": "dpv:ConsentNotice",
            "dct:identifier": f"{property_name} v{number}",
            "schema:version": number,
            "dct:source": content["policy_url"],
            "consent:contentSha256": version.content_hash,
            "dpv:hasPurpose": [
                {"@id": purpose_iri(property_name, number, category["key"])}
                for category in content["categories"]
            ],
        }
    ]
    for category in content["categories"]:
        types = ["dpv:Purpose"]
        if category.get("dpv_purpose"):
            types.append(f"dpv:{category['dpv_purpose']}")
        nodes.append(
            {
                "@id": purpose_iri(property_name, number, category["key"]),
                "@type": types,
                "skos:prefLabel": category["label"],
                "dct:description": category["description"],
                "consent:required": category["required"],
            }
        )
    controller = content.get("controller")
    if controller:
        nodes[0]["dpv:hasDataController"] = {"@id": controller_iri(property_name, number)}
        node: dict[str, Any] = {
            "@id": controller_iri(property_name, number),
            "@type": "dpv:DataController",
        }
        if controller.get("name"):
            node["dpv:hasName"] = controller["name"]
        if controller.get("address"):
            node["schema:address"] = controller["address"]
        contact = {
            field: controller[name]
            for name, field in (("email", "schema:email"), ("contact_url", "schema:url"))
            if controller.get(name)
        }
        if contact:
            node["schema:contactPoint"] = {"@type": "schema:ContactPoint", **contact}
        nodes.append(node)
    return nodes


async def document(
    events: AsyncIterator[list[dict[str, Any]]],
    catalog: SchemaCatalog,
    versions: dict[tuple[str, int], str],
    progress: Callable[[int], None] | None,
) -> AsyncIterator[bytes]:
    """The JSON-LD document, streamed: a record per event, then the notices they name."""
    yield (f'{{"@context": {json.dumps(CONTEXT)},\n"@graph": [').encode()
    first = True
    async for batch in events:
        parts = []
        for item in batch:
            version = await catalog.version(item["property"], item["schema_version"])
            parts.append(("\n" if first else ",\n") + json.dumps(record(item, version)))
            first = False
        yield "".join(parts).encode()
        if progress is not None:
            progress(len(batch))
    for property_name, number in sorted(versions):
        for node in notice(await catalog.version(property_name, number)):
            yield (("\n" if first else ",\n") + json.dumps(node)).encode()
            first = False
    yield b"\n]"
