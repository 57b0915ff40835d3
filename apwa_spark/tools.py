"""The capability registry: named tools (typed Python callables) a plan step may equip its agent with.

Built-ins:

* ``pii_rules`` ──► ``(text: str, entities: list[str]) -> list[Span]``: rule-based detectors for
  structured PII (email, phone, IP address, URL, IBAN, card number, national id numbers, dates).
* ``chunk_text`` ──► ``(text: str, max_chars: int, by_headings: bool) -> list[str]``.

Third-party tools register through the entry-point group ``apwa_spark.tools``: an entry point
names a :class:`Tool` object, e.g. in ``pyproject.toml``::

    [project.entry-points."apwa_spark.tools"]
    my_detector = "my_package.tools:MY_DETECTOR"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Callable

ENTRY_POINT_GROUP = "apwa_spark.tools"


@dataclass(frozen=True)
class Tool:
    """A named callable with a one-line description (what the planner sees)."""

    name: str
    description: str
    func: Callable


@dataclass(frozen=True)
class Span:
    """A found entity: ``text[start:end]`` is of type ``entity``."""

    start: int
    end: int
    entity: str
    text: str


#: entity type ──► pattern. Order matters where patterns overlap (IBAN before phone).
PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "url": re.compile(r"\bhttps?://[^\s<>\"']+|\bwww\.[^\s<>\"']+"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "card_number": re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b"),
    "ip_address": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "id_number": re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b[A-Z]{2}\d{6}[A-D]\b"),
    "date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}\b"),
}
#: what a plan may ask for ──► the rule entity types that cover it ("person" is the model's job).
ENTITY_ALIASES = {
    "email": ["email"], "phone": ["phone"], "url": ["url"], "ip_address": ["ip_address"],
    "iban": ["iban"], "card_number": ["card_number"], "id_number": ["id_number"], "date": ["date"],
    "address": [], "person": [], "username": [],
}


def find_pii(text: str, entities: list[str]) -> list[Span]:
    """Rule-based PII spans of the requested entity types, non-overlapping, in text order."""
    spans: list[Span] = []
    taken: list[tuple[int, int]] = []
    for entity in [e for e in PII_PATTERNS if any(e in ENTITY_ALIASES.get(x, [x]) for x in entities)]:
        for m in PII_PATTERNS[entity].finditer(text or ""):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            taken.append((m.start(), m.end()))
            spans.append(Span(m.start(), m.end(), entity, m.group()))
    return sorted(spans, key=lambda s: s.start)


def split_text(text: str, max_chars: int = 4000, by_headings: bool = False) -> list[str]:
    """Ordered pieces of ``text``: at Markdown headings when ``by_headings``, then at blank lines or
    lines so that no piece exceeds ``max_chars`` characters. Joined, the pieces give back ``text``."""
    sections = re.split(r"(?m)^(?=#{1,6} )", text or "") if by_headings else [text or ""]
    pieces: list[str] = []
    for section in sections:
        current = ""
        for unit in re.split(r"(?<=\n)", section):
            while len(unit) > max_chars:
                if current:
                    pieces.append(current)
                    current = ""
                pieces.append(unit[:max_chars])
                unit = unit[max_chars:]
            if current and len(current) + len(unit) > max_chars:
                pieces.append(current)
                current = ""
            current += unit
        if current:
            pieces.append(current)
    return pieces or [""]


BUILTINS = {
    "pii_rules": Tool("pii_rules", "rule detectors for emails, phones, IPs, URLs, IBANs, card and id numbers, dates", find_pii),
    "chunk_text": Tool("chunk_text", "split text into ordered pieces by size or at Markdown headings", split_text),
}


@lru_cache(maxsize=1)
def registry() -> dict[str, Tool]:
    """All tools: built-ins plus those registered under the ``apwa_spark.tools`` entry-point group."""
    tools = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        tool = ep.load()
        if not isinstance(tool, Tool):
            raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} must name an apwa_spark.tools.Tool")
        tools[tool.name] = tool
    return tools


def get_tool(name: str) -> Tool:
    """The tool called ``name``.

    Raises:
        KeyError: unknown tool; the message lists the registered ones.
    """
    tools = registry()
    if name not in tools:
        raise KeyError(f"unknown tool {name!r}; registered tools: {sorted(tools)}")
    return tools[name]
