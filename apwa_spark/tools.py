"""The capability registry: named tools (typed Python callables) a plan step may equip its agent with.

Built-ins:

* ``pii_rules`` ──► ``(text: str, entities: list[str]) -> list[Span]``: rule-based detectors for
  structured PII (email, phone, IP address, URL, IBAN, card number, national id numbers of the US,
  UK, France, Italy and Germany, dates, postal addresses of the US, UK, Germany and France, and
  usernames after a cue such as ``username:`` or an ``@handle``).
* ``name_candidates`` ──► ``(text: str, taken: list[Span]) -> list[str]``: runs of capitalized words
  that may be person names (the redact step's model chooses among them; a rule cannot tell a name
  from a capitalized word, and the small model cannot be trusted to copy one exactly).
* ``chunk_text`` ──► ``(text: str, max_chars: int, by_headings: bool) -> list[str]``.

A tool's ``role`` says how a step uses it: a ``detector`` gives spans to redact, a ``candidates``
tool gives strings for the model to choose from, a ``splitter`` cuts text into pieces.

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
from typing import Callable, Sequence

ENTRY_POINT_GROUP = "apwa_spark.tools"


@dataclass(frozen=True)
class Tool:
    """A named callable with a one-line description (what the planner sees) and its ``role``:
    ``detector`` (the default; ``(text, entities) -> list[Span]``), ``candidates``
    (``(text, taken_spans) -> list[str]``) or ``splitter``."""

    name: str
    description: str
    func: Callable
    role: str = "detector"


@dataclass(frozen=True)
class Span:
    """A found entity: ``text[start:end]`` is of type ``entity``."""

    start: int
    end: int
    entity: str
    text: str


_TOWN = (r"[A-ZÀ-Ý][\wÀ-ÿ'-]*(?:[ -](?:[A-ZÀ-Ý][\wÀ-ÿ'-]*|sur|sous|en|le|la|les|de|du|des|aux|am|an|im|der|"
         r"vor|vorm|ob|bei|upon|on)(?![\w]))*")
#: one line of a street address: no sentence punctuation, but abbreviations such as ``Apt.``
_STREET = r"(?:[^,\n.;:!?]|(?:Apt|Suite|Ste|St|Rd|Ave|Blvd|No|Nr|Str)\.)"
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")

#: entity type ──► pattern, tried in this order; a later pattern never takes text an earlier one
#: took (IBAN and card before phone, dates and id numbers before phone). A pattern with a group
#: named ``pii`` marks only that group (the rest is context, e.g. ``username: <pii>``).
PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "url": re.compile(r"\b(?:https?|ftp)://[^\s<>\"']+|\bwww\.[^\s<>\"']+"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "id_number": re.compile(
        r"\b\d{3}-\d{2}-\d{4}\b"                                   # US social security number
        r"|\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Z]\b"                # UK national insurance number
        r"|\b[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"  # French NIR (sécurité sociale)
        r"|\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b"       # Italian codice fiscale
        r"|\b\d{2} \d{3} \d{3} \d{3}\b"                            # German Steuer-ID, as printed
    ),
    "card_number": re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    "ip_address": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
                             r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"),
    "date": re.compile(
        r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
        rf"|\b\d{{1,2}}\.? (?:{_MONTHS})\.? \d{{4}}\b|\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"
    ),
    "address": re.compile(
        rf"\b\d{{1,6}}[A-Za-z]? {_STREET}{{2,60}}, {_TOWN}, [A-Z]{{2}} \d{{5}}(?:-\d{{4}})?\b"          # US: ..., ST 12345
        rf"|\b(?:(?:Flat|Studio|Apartment|Unit) \d+[A-Za-z]?, |\d{{1,5}}[A-Za-z]? ){_STREET}{{2,60}}, "
        rf"{_TOWN}, [A-Z]{{1,2}}\d[A-Z\d]? ?\d[A-Z]{{2}}\b"                                            # UK postcode
        rf"|\b(?:(?:van|von|an|am|im|in|zu|zum|zur)(?: der| den| dem)? )?[A-ZÄÖÜ][\wäöüß.-]*(?: [A-ZÄÖÜ][\wäöüß.-]*){{0,3}} \d{{1,5}}[a-z]?(?:[/-]\d{{1,4}})?, \d{{5}} {_TOWN}"  # DE
        rf"|(?:\b\d{{1,4}}(?: ?(?:bis|ter))?,? )?\b(?:rue|avenue|boulevard|bd|chemin|place|impasse|allée|quai|route|"
        rf"cours|square|voie|rond-point|passage|faubourg) {_STREET}{{2,60}}, \d{{5}} {_TOWN}"            # FR
    ),
    "username": re.compile(r"(?i:\b(?:user ?name\s*(?:is\s+)?[:=]?|(?:login|user)(?: name| id)?\s*[:=]|"
                           r"handle\s*(?:is\s+)?[:=]?|(?:logged|signed) in as)\s*@?)(?P<pii>[A-Za-z0-9][\w.-]{1,31}[A-Za-z0-9_])"
                           r"|(?<![\w@.])@(?P<handle>[A-Za-z0-9_]{3,30})\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(0\) ?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{2,5}){1,5}"
                        r"(?: ?(?:x|ext\.?) ?\d{1,5})?\b"),
}
#: what a plan may ask for ──► the rule entity types that cover it ("person" is the model's job).
ENTITY_ALIASES = {
    "email": ["email"], "phone": ["phone"], "url": ["url"], "ip_address": ["ip_address"],
    "iban": ["iban"], "card_number": ["card_number"], "id_number": ["id_number"], "national_id": ["id_number"],
    "date": ["date"], "date_of_birth": ["date"], "address": ["address"], "username": ["username"], "person": [],
}
#: every entity type the detectors know, and ``person`` (the model's): the redact default, so that
#: nothing a detector could find is left in the "redacted" text unless a step narrows the list.
DEFAULT_ENTITIES = ("person", *PII_PATTERNS)
#: the detector that always runs in a redact step, whatever tools it lists and whatever the model says.
RULES_TOOL = "pii_rules"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only) holds."""
    total = 0
    for i, d in enumerate(int(c) for c in reversed(digits)):
        total += d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2)
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces ignored) holds."""
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _valid(entity: str, value: str) -> bool:
    """Checks a pattern cannot express: checksums, digit counts."""
    digits = re.sub(r"\D", "", value)
    if entity == "card_number":
        return luhn_ok(digits)
    if entity == "iban":
        return iban_ok(value)
    if entity == "phone":  # digits before an extension (x123, ext. 123)
        return 7 <= len(re.sub(r"\D", "", re.split(r"x|ext", value)[0])) <= 15
    return True


def _trim(entity: str, start: int, end: int, text: str) -> tuple[int, int]:
    """URLs and addresses do not end with sentence punctuation."""
    if entity in ("url", "address"):
        while end > start and text[end - 1] in ".,;:!?)]'\"":
            end -= 1
    return start, end


def find_pii(text: str, entities: list[str]) -> list[Span]:
    """Rule-based PII spans of the requested entity types, non-overlapping, in text order.

    ``entities`` are plan entity names (``email``, ``phone``, ``address``, ``national_id`` …, see
    :data:`ENTITY_ALIASES`); ``person`` has no rule (the redact step asks the model). Card numbers
    must pass the Luhn check and IBANs the mod-97 check; phones have 7 to 15 digits.
    """
    spans: list[Span] = []
    taken: list[tuple[int, int]] = []
    text = text or ""
    for entity in [e for e in PII_PATTERNS if any(e in ENTITY_ALIASES.get(x, [x]) for x in entities)]:
        for m in PII_PATTERNS[entity].finditer(text):
            group = next((g for g in ("pii", "handle") if g in m.re.groupindex and m.group(g)), None)
            start, end = _trim(entity, *(m.span(group) if group else m.span()), text)
            if end <= start or not _valid(entity, text[start:end]):
                continue
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            spans.append(Span(start, end, entity, text[start:end]))
    return sorted(spans, key=lambda s: s.start)


_TITLES = r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|Herr|Frau|Mme|Mlle|Sir|Dame)"
_NAME_WORD = rf"(?!{_TITLES}\b)[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+(?:[-'][A-ZÀ-ÖØ-Þ]?[a-zß-öø-ÿ]+)*"
_PARTICLE = r"(?:van|von|de|du|der|den|le|la|des|di|da|dos|zu|ten|ter|bin|al|el)"
#: a title before a name (``Dr.``, ``Frau``); never a name itself.
NAME_TITLE = rf"{_TITLES}\.?"
NAME_RUN = re.compile(rf"(?<![\w@./-])(?:{NAME_TITLE} )?{_NAME_WORD}(?: (?:{_PARTICLE} )*{_NAME_WORD}){{0,3}}(?![\w@])")
#: capitalized words that are never a person's name: weekdays and months (English, German, French).
NOT_NAMES = frozenset(
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday Montag Dienstag Mittwoch Donnerstag Freitag Samstag "
    "Sonntag Lundi Mardi Mercredi Jeudi Vendredi Samedi Dimanche Januar Februar März Juni Juli Oktober Dezember "
    "Janvier Février Mars Avril Mai Juin Juillet Août Septembre Octobre Novembre Décembre".split() + _MONTHS.split("|"))


def name_candidates(text: str, taken: list[Span] | None = None) -> list[str]:
    """Runs of capitalized words in ``text`` that may be person names, in text order, without repeats.

    A run is one to four capitalized words, with name particles (``van``, ``de``, ``von`` …) and an
    optional title (``Dr.``, ``Frau`` …). Left out: runs overlapping ``taken`` spans (structured PII
    already found, e.g. a town in an address), weekday and month names, and a single word at the
    start of a sentence unless it is also capitalized elsewhere (sentence case says nothing there);
    a longer run at a sentence start is offered whole and without its first word (``Customer Ann
    Lee`` ──► also ``Ann Lee``). Lower-case names are not found.
    """
    spans = [(s.start, s.end) for s in taken or []]
    runs = [m for m in NAME_RUN.finditer(text or "")
            if not any(a < m.end() and m.start() < b for a, b in spans) and m.group() not in NOT_NAMES]
    opens = [_opens_sentence(text, m.start()) for m in runs]
    inner = {m.group() for m, first in zip(runs, opens) if not first}
    out: dict[str, None] = {}
    for m, first in zip(runs, opens):
        words = m.group().split(" ")
        if not first:
            options = [m.group()]
        elif len(words) > 1:
            options = [m.group(), " ".join(words[1:])]
        else:
            options = [m.group()] if m.group() in inner else []
        out.update((o, None) for o in options if o not in NOT_NAMES)
    return list(out)


def _opens_sentence(text: str, start: int) -> bool:
    """``text[start:]`` opens the text, a line, or a sentence (after ``.!?:;`` and white space)."""
    i = start
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i == 0 or "\n" in text[i:start] or (i < start and text[i - 1] in ".!?:;")


def split_text(text: str | None, max_chars: int = 4000, by_headings: bool = False) -> list[str]:
    """Ordered pieces of ``text`` of at most ``max_chars`` characters: at Markdown headings when
    ``by_headings``, then as :func:`chunk_text` cuts (blank lines, lines, characters). Joined, the
    pieces give back ``text``; NULL or empty text gives one empty piece."""
    return [piece for piece, _ in chunk_texts([text or ""], max_chars, count_chars, by_headings)[0]]


def count_chars(texts: Sequence[str]) -> list[int]:
    """Length of each text in characters: the counter of size-based chunking."""
    return [len(t) for t in texts]


def chunk_texts(texts: Sequence[str], limit: int, count: Callable[[Sequence[str]], list[int]],
                by_headings: bool = False) -> list[list[tuple[str, int]]]:
    """:func:`chunk_text` of each text (cut first at Markdown headings when ``by_headings``), with
    every text counted in one ``count`` call (an LLM client sends those requests concurrently), so a
    batch of short texts costs one round of counting.

    Args:
        texts: the texts, in order.
        limit: the most units (tokens, or characters with :func:`count_chars`) a piece may hold.
        count: texts ──► their sizes in units; ``LLMClient.count_tokens`` counts with the endpoint's
            own tokenizer.

    Returns:
        per text, its (piece, units) pairs in order; an empty text gives one empty piece.
    """
    sections = [re.split(r"(?m)^(?=#{1,6} )", t) if by_headings else [t] for t in texts]
    flat = [s for parts in sections for s in parts if s]
    totals = iter(count(flat) if flat else [])
    out = []
    for parts in sections:
        pieces = [p for s in parts if s for p in chunk_text(s, limit, count, next(totals))]
        out.append(pieces or [("", 0)])
    return out


def chunk_text(text: str, limit: int, count: Callable[[Sequence[str]], list[int]],
               total: int | None = None) -> list[tuple[str, int]]:
    """Split ``text`` into ordered (piece, units) pairs of at most ``limit`` units each (``count``:
    texts ──► sizes; tokens from the endpoint's tokenizer, or characters).

    Splits on blank lines (speeches, paragraphs), then lines, then characters, in that order of
    preference. ``"".join`` of the pieces equals ``text``: nothing is dropped. ``total``: the text's
    size when already known (not counted again).
    """
    if total is None:
        [total] = count([text])
    if total <= limit:
        return [(text, total)]
    units_per_char = max(len(text) / max(total, 1), 0.5)
    target_chars = max(int(limit * units_per_char * 0.9), 1)
    pieces = _pack(_split_units(text, target_chars), target_chars)
    out: list[tuple[str, int]] = []
    for piece, n in zip(pieces, count(pieces)):
        out.extend([(piece, n)] if n <= limit else chunk_text(piece, max(limit * 3 // 4, 1), count))
    return out


def _split_units(text: str, target_chars: int) -> list[str]:
    """Blank-line separated blocks (separator kept); a block longer than the target is cut at lines, then characters."""
    units = []
    for block in re.split(r"(?<=\n\n)", text):
        if len(block) <= target_chars:
            units.append(block)
            continue
        for line in re.split(r"(?<=\n)", block):
            units.extend(line[i:i + target_chars] for i in range(0, len(line), target_chars))
    return [u for u in units if u]


def _pack(units: list[str], target_chars: int) -> list[str]:
    chunks, current = [], ""
    for unit in units:
        if current and len(current) + len(unit) > target_chars:
            chunks.append(current)
            current = ""
        current += unit
    return chunks + ([current] if current else [])


BUILTINS = {
    "pii_rules": Tool("pii_rules", "rule detectors for emails, phones, IPs, URLs, IBANs, card and id numbers, dates, postal addresses, usernames", find_pii),
    "name_candidates": Tool("name_candidates", "capitalized word runs that may be person names, for the model to choose from",
                            name_candidates, role="candidates"),
    "chunk_text": Tool("chunk_text", "split text into ordered pieces by size or at Markdown headings", split_text,
                       role="splitter"),
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


def tool_notes(text: str, names: list[str]) -> str:
    """What the named tools find in ``text``, as prompt lines for an executor agent equipped with
    them: a detector's spans (``pii_rules found: email 'ann@example.com'``, every entity type it
    knows) or a candidates tool's strings; "" when ``names`` is empty.

    Raises:
        KeyError: an unknown tool (the message lists the registered ones).
        ValueError: a tool that gives no findings (a ``splitter``, such as ``chunk_text``).
    """
    lines = []
    for tool in (get_tool(n) for n in names):
        if tool.role == "detector":
            found = [f"{s.entity} {s.text!r}" for s in tool.func(text, list(DEFAULT_ENTITIES))]
        elif tool.role == "candidates":
            found = [repr(c) for c in tool.func(text, [])]
        else:
            raise ValueError(f"tool {tool.name!r} ({tool.role}) gives no findings an agent could read; "
                             "equip steps with detector or candidates tools")
        lines.append(f"{tool.name} found: {'; '.join(found) or 'nothing'}")
    return "\n".join(lines)


def get_tool(name: str) -> Tool:
    """The tool called ``name``.

    Raises:
        KeyError: unknown tool; the message lists the registered ones.
    """
    tools = registry()
    if name not in tools:
        raise KeyError(f"unknown tool {name!r}; registered tools: {sorted(tools)}")
    return tools[name]
