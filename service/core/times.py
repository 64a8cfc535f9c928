"""Times: how a client's is read (RFC 3339 with an offset, nothing looser) and how the service
writes every one it shows (UTC, `Z`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

TIMESTAMP_FORM = "an RFC 3339 date-time with an offset, such as 2027-01-01T00:00:00Z"
# RFC 3339 section 5.6: full-date "T" full-time, the offset "Z" or +hh:mm / -hh:mm ("T" and "Z" may
# be lower case, its note). ASCII digits only: `\d` would take any script's.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def rfc3339(value: object) -> object:
    """`value` as a datetime when it is RFC 3339 date-time text with an offset; an error naming the
    form otherwise (pydantic's lax datetime would read 20270101 or "20270101" as Unix seconds, and
    a date alone as its midnight). A datetime, which only Python code can pass, is left to
    `AwareDatetime`."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise PydanticCustomError("rfc3339_datetime", f"Input should be {TIMESTAMP_FORM}")
    text, beyond = _to_microseconds(value.upper())
    try:
        parsed = datetime.fromisoformat(text)
        # Stored times are whole microseconds, so for every stored t, t >= x and t < x are what
        # they are for x rounded up to one: a bound `since` or `until` keeps its meaning.
        return parsed + _MICROSECOND if beyond else parsed
    except ValueError as exc:  # the form, but no such day or time: 2027-02-30, 24:00, second 60
        raise PydanticCustomError(
            "rfc3339_datetime", f"Input should be {TIMESTAMP_FORM}: {{why}}", {"why": str(exc)}
        ) from None
    except OverflowError:  # a fraction of a microsecond before year 10000, rounded up
        raise PydanticCustomError(
            "rfc3339_datetime", f"Input should be {TIMESTAMP_FORM}: year is out of range"
        ) from None


_MICROSECOND = timedelta(microseconds=1)
_FRACTION = re.compile(r"\.([0-9]{7,})")


def _to_microseconds(text: str) -> tuple[str, bool]:
    """`text` with a fraction of more than six digits cut to six, and whether a digit cut was not
    zero (Python's parser would drop the digits past the sixth silently: rounding down)."""
    found = _FRACTION.search(text)
    if found is None:
        return text, False
    digits = found.group(1)
    cut = text[: found.start(1) + 6] + text[found.end(1) :]
    return cut, digits[6:].strip("0") != ""


# A client's time, in a body, a query string or a CLI option (JSON schema: string, date-time).
Timestamp = Annotated[AwareDatetime, BeforeValidator(rfc3339)]


def iso(moment: datetime) -> str:
    """A time as the service writes every one it shows: RFC 3339 in UTC, with `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
