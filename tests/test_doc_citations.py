"""Every citation of a section of the design notes, `docs/<name>.md, "<heading>"` or
`README, "<heading>"`, in the code, the migrations, the tests and the notes themselves names a
heading that exists: a renamed section leaves no comment pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCHED = ("service", "alembic", "bench", "tests", "docs", "deploy", "scripts")
SUFFIXES = {".py", ".md", ".js", ".html", ".lua", ".yml", ".yaml", ".toml", ".sh"}
# `docs/evidence.md, "The leaf"`, `retention.md "The purge"`, a link
# `[docs/policies.md](docs/policies.md), "Retries"`, `README, "API at a glance"`: a heading's text
# may run onto the next line of a comment or a paragraph.
CITATION = re.compile(
    r'(?:docs/)?\b(\w+)\.md(?:\]\((?:docs/)?\w+\.md\))?,?\s+"([^"]{1,100})"'
    r'|\bREADME,?\s+"([^"]{1,100})"'
)
CONTINUATION = re.compile(r"\s*\n\s*(?:#\s*|//\s*|\*\s*)?")


def headings(document: Path) -> set[str]:
    """The headings of a Markdown document (a `#` line inside a fenced code block is not one)."""
    found, fenced = set(), False
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            found.add(line.lstrip("#").strip())
    return found


def sources() -> list[Path]:
    found = [ROOT / "README.md"]
    for folder in SEARCHED:
        found += [
            path
            for path in sorted((ROOT / folder).rglob("*"))
            if path.suffix in SUFFIXES and path.is_file() and "node_modules" not in path.parts
        ]
    return found


def test_every_cited_section_is_a_heading() -> None:
    documents = {path.name: headings(path) for path in (ROOT / "docs").glob("*.md")}
    documents["README"] = headings(ROOT / "README.md")
    cited, broken = 0, []
    for source in sources():
        text = source.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            name = "README" if match.group(3) else f"{match.group(1)}.md"
            if name not in documents:
                continue  # another project's file (a package's README), not a design note
            section = CONTINUATION.sub(" ", match.group(3) or match.group(2)).strip()
            if section.startswith("<"):  # a placeholder, as in this file's docstring
                continue
            cited += 1
            if section not in documents[name]:
                line = text.count("\n", 0, match.start()) + 1
                broken.append(f"{source.relative_to(ROOT)}:{line}: {name}, {section!r}")
    assert cited > 100  # the pattern still finds the citations
    assert not broken, "sections cited that are no heading:\n" + "\n".join(broken)
