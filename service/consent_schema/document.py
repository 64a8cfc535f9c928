"""The consent schema file: what a banner shows, as operators keep it in git (YAML).

The validated document is also the stored content of a version; its canonical JSON (sorted keys, no
insignificant white space, UTF-8) is what the content hash covers, so anyone holding an export can
recompute the hash and prove what was shown.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.core.errors import PATTERN_WORDS, Unprocessable
from service.core.json_input import no_nul

PROPERTY_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
CATEGORY_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PATTERN_WORDS[PROPERTY_PATTERN] = (
    "1 to 64 lower-case letters, digits and hyphens, beginning and ending with a letter or digit"
)
PATTERN_WORDS[CATEGORY_KEY_PATTERN] = (
    "1 to 64 lower-case letters, digits, hyphens and underscores, beginning with a letter"
)
PATTERN_WORDS[EMAIL_PATTERN] = "an email address (name@domain.tld, no spaces)"
T = TypeVar("T")


def _unique(items: list[T], field: str, attribute: str) -> list[T]:
    seen: set[str] = set()
    for index, item in enumerate(items):
        value = getattr(item, attribute)
        if value in seen:
            raise ValueError(f"{field}[{index}].{attribute} {value!r} appears twice")
        seen.add(value)
    return items


class Party(StrEnum):
    FIRST = "first"
    THIRD = "third"


class Storage(StrEnum):
    COOKIE = "cookie"
    LOCAL_STORAGE = "localStorage"
    SESSION_STORAGE = "sessionStorage"
    OTHER = "other"


class _Strict(BaseModel):
    """Booleans are booleans and numbers numbers (StrictBool, StrictInt); no string holds NUL."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value) if isinstance(value, str) else value


class CookieEntry(_Strict):
    """One cookie, storage key or cookieless endpoint a category covers."""

    name: str = Field(min_length=1, max_length=200)
    provider: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=2000)
    duration: str = Field(min_length=1, max_length=200, examples=["Session", "6 months"])
    party: Party
    storage: Storage


class DpvPurpose(StrEnum):
    """W3C DPV 2.1 purposes a cookie category can be: `https://w3id.org/dpv#` + the value
    (docs/dpv.md)."""

    SERVICE_PROVISION = "ServiceProvision"
    ENFORCE_SECURITY = "EnforceSecurity"
    SERVICE_PERSONALISATION = "ServicePersonalisation"
    USER_INTERFACE_PERSONALISATION = "UserInterfacePersonalisation"
    SERVICE_USAGE_ANALYTICS = "ServiceUsageAnalytics"
    MARKETING = "Marketing"
    ADVERTISING = "Advertising"
    PERSONALISED_ADVERTISING = "PersonalisedAdvertising"
    TARGETED_ADVERTISING = "TargetedAdvertising"


class Category(_Strict):
    key: str = Field(pattern=CATEGORY_KEY_PATTERN, examples=["analytics"])
    label: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=4000)
    required: StrictBool = Field(description="Strictly necessary: always on, cannot be refused.")
    dpv_purpose: DpvPurpose | None = Field(
        default=None,
        description="The W3C DPV purpose this category serves, for the DPV export "
        "(`dpv:` + the value); without it the category is a plain `dpv:Purpose`.",
    )
    cookies: list[CookieEntry]

    @field_validator("cookies")
    @classmethod
    def _unique_cookie_names(cls, cookies: list[CookieEntry]) -> list[CookieEntry]:
        return _unique(cookies, "cookies", "name")


class Controller(_Strict):
    """Who decides why and how the data is processed (GDPR art. 4(7)), as the policy names them:
    the data controller of the DPV export (docs/dpv.md)."""

    name: str | None = Field(
        default=None, min_length=1, max_length=300, examples=["Michal Jatczak T/A ITSailor"]
    )
    email: str | None = Field(
        default=None, pattern=EMAIL_PATTERN, max_length=254,
        examples=["dsr@itsailor.io"],
    )  # fmt: skip
    address: str | None = Field(default=None, min_length=1, max_length=500)
    contact_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _named_or_reachable(self) -> Self:
        if self.name is None and self.email is None and self.contact_url is None:
            raise ValueError("a controller needs a name, an email or a contact_url")
        return self


# How long a claim about consent can be brought, when no retention is given: kept past the time
# a record is relied on (docs/retention.md). An assumption to replace with your counsel's figure.
LIMITATION_DAYS = 3 * 365


class Retention(_Strict):
    """How long this property's events are kept (GDPR art. 5(1)(e); docs/retention.md)."""

    superseded_days: StrictInt = Field(
        default=LIMITATION_DAYS,
        ge=1,
        le=36500,
        description="Days a decision is kept after a later decision of the same subject replaced "
        "it (with the re-prompts after it).",
    )
    current_days: StrictInt | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Days a subject's latest decision (and the re-prompts after it) is kept after "
        "it was recorded; default consent_ttl_days + superseded_days: relied on until it lapses, "
        "then kept as long as a claim can be brought.",
    )


def _signal_handling(value: Any) -> Any:
    """One refusal naming the four values, not one per member of the union (pydantic's, whose
    pointers would end in the members' names: `…/gpc/bool`)."""
    if isinstance(value, bool) or (isinstance(value, str) and value in ("apply", "record")):
        return value
    raise PydanticCustomError("signal_handling", "Input should be false, true, 'apply' or 'record'")


SignalHandling = Annotated[
    StrictBool | Literal["apply", "record"], BeforeValidator(_signal_handling)
]
_SIGNAL_HANDLING = (
    "`false`: ignored. `apply` (or `true`): every optional category is off while the signal is "
    "present, whatever was clicked. `record`: the signal is the person's refusal, recorded once "
    "as a `reject-all` from the signal; a later explicit choice stands (docs/policies.md)."
)


class HonouredSignals(_Strict):
    """How this policy treats each browser privacy signal."""

    gpc: SignalHandling = Field(
        description=f"Global Privacy Control (Sec-GPC: 1). {_SIGNAL_HANDLING}"
    )
    dnt: SignalHandling = Field(description=f"Do Not Track (DNT: 1). {_SIGNAL_HANDLING}")


class GoogleConsentType(StrEnum):
    """Google Consent Mode v2's consent types."""

    AD_STORAGE = "ad_storage"
    AD_USER_DATA = "ad_user_data"
    AD_PERSONALIZATION = "ad_personalization"
    ANALYTICS_STORAGE = "analytics_storage"
    FUNCTIONALITY_STORAGE = "functionality_storage"
    PERSONALIZATION_STORAGE = "personalization_storage"
    SECURITY_STORAGE = "security_storage"


class ConsentSchemaDocument(_Strict):
    """One property's consent schema: categories, cookie inventory, policy and signal handling."""

    property: str = Field(pattern=PROPERTY_PATTERN, examples=["itsailor"])
    policy_url: HttpUrl
    consent_ttl_days: StrictInt = Field(
        ge=1, le=3650, description="How long a decision stays valid before the banner asks again."
    )
    signals: HonouredSignals
    controller: Controller | None = Field(
        default=None,
        description="The data controller the policy names (name, email, postal address, contact "
        "page); the DPV export's `hasDataController`.",
    )
    retention: Retention | None = Field(
        default=None,
        description="How long events are kept; `consent-service retention purge` deletes what is "
        "past it (docs/retention.md). Without it: 3 years after a decision is replaced, and "
        "consent_ttl_days + 3 years after the latest one.",
    )
    categories: list[Category] = Field(min_length=1)
    google_consent_mode: dict[GoogleConsentType, str] | None = Field(
        default=None,
        description="Google Consent Mode v2: the category whose effective choice grants each "
        "consent type (`analytics_storage: analytics`). The browser client sends "
        "`gtag('consent', 'default'|'update', …)` from it when gtag is on the page; a type not "
        "listed is sent as denied.",
        examples=[{"analytics_storage": "analytics", "ad_storage": "marketing"}],
    )

    @field_validator("categories")
    @classmethod
    def _unique_category_keys(cls, categories: list[Category]) -> list[Category]:
        return _unique(categories, "categories", "key")

    @model_validator(mode="after")
    def _mapped_categories_exist(self) -> Self:
        keys = {category.key for category in self.categories}
        for consent_type, key in (self.google_consent_mode or {}).items():
            if key not in keys:
                raise ValueError(
                    f"google_consent_mode.{consent_type.value}: {key!r} is not a category of "
                    "this schema"
                )
        return self

    # (`property` is a field here, so these are plain methods.)
    def required_keys(self) -> frozenset[str]:
        return frozenset(c.key for c in self.categories if c.required)

    def optional_keys(self) -> frozenset[str]:
        return frozenset(c.key for c in self.categories if not c.required)


def canonical_json(content: Any) -> bytes:
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def content_hash(content: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a document's content."""
    return hashlib.sha256(canonical_json(content)).hexdigest()


def document_content(document: ConsentSchemaDocument) -> dict[str, Any]:
    # An optional part left out stays out, so a file that does not use it hashes as it always did.
    return document.model_dump(mode="json", exclude_none=True)


def describe_errors(error: ValidationError) -> list[str]:
    """`categories[1].cookies[0].party: Input should be 'first' or 'third'` for every bad field."""
    messages = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        messages.append(f"{path or '(document)'}: {item['msg']}")
    return messages


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which plain YAML silently overwrites."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_document(data: Any, *, source: str = "document") -> ConsentSchemaDocument:
    try:
        return ConsentSchemaDocument.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc)
        raise Unprocessable(
            f"{source} is not a valid consent schema: " + "; ".join(problems),
            extra={"errors": [{"pointer": p.split(":", 1)[0], "detail": p} for p in problems]},
        ) from None


def load_document_file(
    path: Path, *, property_override: str | None = None
) -> ConsentSchemaDocument:
    """Read and validate a YAML (or JSON) schema file; every bad field is named in the error."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except OSError as exc:
        raise Unprocessable(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise Unprocessable(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except yaml.YAMLError as exc:
        raise Unprocessable(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise Unprocessable(f"{path}: expected a mapping at the top level")
    if property_override is not None:
        data["property"] = property_override
    return parse_document(data, source=str(path))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error in one line: where (line and column, from 1) and what; its own message
    spans lines, quotes the text and names the file "<unicode string>"."""
    problem = getattr(exc, "problem", None)
    if problem is None:
        return str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the file format, for editors (committed beside the examples)."""
    schema = ConsentSchemaDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Consent schema (consent-service)"
    return schema
