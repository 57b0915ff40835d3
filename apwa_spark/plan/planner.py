"""The planner agent (APWA's *manager*): a plain-language query + table metadata ──► a :class:`Plan`.

The planner sees only :class:`~apwa_spark.plan.metadata.TableMetadata` (bounded), never the data.
Planning is decomposed into small grammar-constrained choices, because the embedded model (Gemma 3
270M, a base model) cannot write a whole plan as JSON but can make one narrow choice at a time:

1. **Kind stage.** The model names the request's *action* (``translate``, ``keep``, ``classify``,
   ``extract``, ``hide``, ``split``, ``summarize all`` …), constrained to the keys of
   :data:`ACTIONS`, after few-shot ``Request: … / Action: …`` pairs that come first in the prompt
   and are byte-identical across calls (the endpoint's prefix cache pays for them once). The
   action maps to a step kind. Measured on 22 development queries with the 270M model: naming an
   action word got 22/22 kinds right; naming the kind itself (``map``, ``redact`` …) got 13/22 at
   best, and 3/22 with kind definitions in the prompt (the model fell back to ``filter``/``reduce``).
2. **Field stage** (only for kinds with fields the query must supply): one call with a per-kind
   narrowed JSON schema. Completion style (base models): labels, extract fields and chunk sizes are
   enums of the query's own words and numbers, group keys an enum of the table's columns, entity
   types an enum of the known types. Chat style (instruct models): labels and field names are free
   strings.
3. **Deterministic defaults** for what a small model cannot fill well: the text column is the
   string column with the longest median length; ``map``/``filter``/``classify``/``extract``
   templates use the query itself as the executor's instruction; output names are per kind.
4. **Validation** (pydantic, then :meth:`Plan.check` against the columns and the tool registry); on
   failure one repair round repeats the field stage with the error fed back; if that fails too, a
   clearly named rule fallback (``rule:or-list`` for labels) is tried, and otherwise
   :class:`PlanError` shows the query, the metadata and the model's answers.

Every plan carries :class:`~apwa_spark.plan.ir.PlanProvenance`: which stage decided each choice
(``model``, ``model-repair``, ``default:…``, ``rule:…``), the action word, and the LLM calls spent.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from pydantic import ValidationError

from apwa_spark.config import Settings
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.plan.ir import Plan, PlanError, PlanProvenance
from apwa_spark.plan.metadata import TableMetadata
from apwa_spark.tools import ENTITY_ALIASES, registry

#: action word the model may name ──► step kind.
ACTIONS: dict[str, str] = {
    "translate": "map", "rewrite": "map", "write": "map", "describe": "map", "shorten": "map", "answer": "map",
    "keep": "filter", "drop": "filter", "only": "filter",
    "classify": "classify", "label": "classify", "sort": "classify", "categorize": "classify", "tag": "classify",
    "extract": "extract", "pull": "extract", "get": "extract", "give": "extract", "list": "extract",
    "redact": "redact", "mask": "redact", "anonymize": "redact", "hide": "redact", "remove personal": "redact",
    "split": "chunk", "cut": "chunk", "break": "chunk",
    "summarize all": "reduce", "combine": "reduce", "merge": "reduce",
}
ACTION_EXAMPLES = [
    ("Is each email spam or not spam?", "classify"),
    ("Keep only the messages that mention a refund.", "keep"),
    ("Extract the title and year of each document.", "extract"),
    ("Hide names, e-mails and phone numbers.", "hide"),
    ("Translate each text to French.", "translate"),
    ("Split the documents into pieces of 2000 characters.", "split"),
    ("Summarize all texts of each author into one summary.", "summarize all"),
]
ACTION_TEMPLATE = Template(
    instruction="Name the action each request asks for.\n\n"
    + "\n\n".join(f"Request: {q}\n\nAction: {a}" for q, a in ACTION_EXAMPLES),
    cue="Action:",
)

#: per kind: few-shot (request, fields) pairs for the field stage.
FIELD_EXAMPLES: dict[str, list[tuple[str, dict]]] = {
    "classify": [("Is each email spam or not spam?", {"labels": ["spam", "not spam"]}),
                 ("Sort the tickets into billing, bug or question.", {"labels": ["billing", "bug", "question"]})],
    "extract": [("Extract the title and year of each document.", {"fields": ["title", "year"]}),
                ("Get the name, age and city of each person as JSON.", {"fields": ["name", "age", "city"]})],
    "redact": [("Hide names, e-mails and phone numbers.", {"entities": ["person", "email", "phone"]}),
               ("Mask the IP addresses and card numbers.", {"entities": ["ip_address", "card_number"]})],
    "chunk": [("Split the documents into pieces of 2000 characters.", {"max_chars": 2000, "by_headings": False}),
              ("Cut each book into chapters at its headings.", {"max_chars": 4000, "by_headings": True})],
    "reduce": [("Summarize all texts of each author into one summary.", {"group_by": "author"}),
               ("Summarize the whole table into one summary.", {"group_by": "none"})],
}
FIELD_TEMPLATES = {
    kind: Template(instruction="Fill in the fields each request asks for, as JSON.\n\n"
                   + "\n\n".join(f"Request: {q}\n\nFields: {json.dumps(f)}" for q, f in examples), cue="Fields:")
    for kind, examples in FIELD_EXAMPLES.items()
}
OUTPUTS = {"map": "result", "classify": "label", "extract": "extracted", "redact": "redacted", "chunk": "chunk",
           "reduce": "summary"}
STOPWORDS = set("""a an the and or of to in on at by for from with as into is are be each every all any this that these
those it its their them they than then only one per into each its as json text texts row rows table""".split())
ENTITIES = sorted(ENTITY_ALIASES)


def plan_schema(columns: list[str]) -> dict:
    """The whole plan's JSON schema with column-valued fields narrowed to ``columns`` (for
    endpoints that can write a whole plan; the staged planner uses per-kind schemas instead)."""
    import copy

    schema = copy.deepcopy(Plan.json_schema())
    for definition in schema.get("$defs", {}).values():
        props = definition.get("properties", {})
        for field in ("column", "order_by"):
            if field in props:
                props[field] = {"type": "string", "enum": columns}
        if "group_by" in props:
            props["group_by"] = {"type": "array", "items": {"type": "string", "enum": columns}}
    return schema


def query_words(query: str) -> list[str]:
    """Candidate labels / field names from the query: its words and two-word phrases (``not spam``),
    lowercased, stopwords dropped, in order of first use."""
    words = [w.lower() for w in re.findall(r"[^\W\d_][\w'-]*", query)]
    out = [w for w in words if w not in STOPWORDS and len(w) > 1]
    out += [f"{a} {b}" for a, b in zip(words, words[1:]) if a in ("not", "no", "non") or
            (a not in STOPWORDS and b not in STOPWORDS)]
    return list(dict.fromkeys(out))


def query_numbers(query: str) -> list[int]:
    """Integers written in the query (``2000``, ``1,000``), in order."""
    return list(dict.fromkeys(int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", query) if n.replace(",", "").isdigit()))


def or_list_labels(query: str) -> list[str]:
    """Rule fallback for labels: the ``X, Y or Z`` list at the end of a clause (``as positive or
    negative``, ``into billing, bug or question``)."""
    match = re.search(r"(?:as|into|either|:|between)?\s*([\w' -]+(?:,\s*[\w' -]+)*,?\s+(?:or|and)\s+[\w' -]+?)\s*[.?!]?\s*$",
                      query.strip(), flags=re.I)
    if not match:
        return []
    parts = re.split(r",\s*|\s+or\s+|\s+and\s+", match.group(1))
    labels = [p.strip().lower() for p in parts if p.strip()]
    if labels:
        labels[0] = re.sub(r"^.*\b(?:as|into|either|between)\s+", "", labels[0])
    return list(dict.fromkeys(l for l in labels if l))


def text_column(metadata: TableMetadata) -> str:
    """The string column with the longest median text length (the default text to work on)."""
    strings = [c for c in metadata.columns if c.type == "string"]
    if not strings:
        raise PlanError(f"the table has no string column to work on; columns: {[c.name for c in metadata.columns]}")
    return max(strings, key=lambda c: (c.length_quantiles or [0, 0, 0])[1]).name


class _Staged:
    """One planning attempt's state: the client, what was asked and answered, who decided what."""

    def __init__(self, query: str, metadata: TableMetadata, settings: Settings, client: LLMClient):
        self.query, self.metadata, self.settings, self.client = query, metadata, settings, client
        self.free = settings.llm.prompt_style == "chat"
        self.decided: dict[str, str] = {}
        self.answers: list[str] = []
        self.calls = 0

    def ask(self, template: Template, text: str, schema: dict, max_tokens: int) -> Any:
        [c] = self.client.complete([Task(template, text, max_tokens, json_schema=schema)])
        self.calls += c.calls
        self.answers.append(f"{c.text!r}" + (f" ({c.error})" if c.status != "ok" else ""))
        if c.status != "ok":
            raise PlanError(f"the planner model gave no valid answer: {c.error}")
        return json.loads(c.text)

    def kind(self) -> tuple[str, str]:
        action = self.ask(ACTION_TEMPLATE, f"Request: {self.query}", {"type": "string", "enum": list(ACTIONS)}, 8)
        self.decided["kind"] = "model"
        return action, ACTIONS[action]

    def field_schema(self, kind: str) -> dict | None:
        words, numbers = query_words(self.query), query_numbers(self.query)
        free = {"type": "string", "minLength": 1, "maxLength": 40}
        word = free if self.free or not words else {"type": "string", "enum": words}
        if kind == "classify":
            props = {"labels": {"type": "array", "items": word, "minItems": 2, "maxItems": 8}}
        elif kind == "extract":
            props = {"fields": {"type": "array", "items": word, "minItems": 1, "maxItems": 8}}
        elif kind == "redact":
            props = {"entities": {"type": "array", "items": {"type": "string", "enum": ENTITIES}, "minItems": 1, "maxItems": 8}}
        elif kind == "chunk":
            props = {"max_chars": {"type": "integer", "enum": numbers} if numbers and not self.free else
                     {"type": "integer", "minimum": 16, "maximum": 100000}, "by_headings": {"type": "boolean"}}
        elif kind == "reduce":
            keys = [c.name for c in self.metadata.columns if c.distinct_estimate < max(self.metadata.rows, 2)]
            props = {"group_by": {"type": "string", "enum": keys + ["none"]}}
        else:
            return None
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def fields(self, kind: str, note: str = "") -> dict:
        schema = self.field_schema(kind)
        if schema is None:
            return {}
        columns = ", ".join(c.name for c in self.metadata.columns)
        text = f"Columns: {columns}\nRequest: {self.query}{note}"
        answer = self.ask(FIELD_TEMPLATES[kind], text, schema, 96)
        for key in answer:
            self.decided[f"step0.{key}"] = "model-repair" if note else "model"
        return answer

    def build(self, kind: str, fields: dict) -> Plan:
        """A one-step plan from the kind, the model's fields and the deterministic defaults."""
        column = text_column(self.metadata)
        self.decided.setdefault("step0.column", "default:longest-text-column")
        instruction = self.query.strip()
        step: dict[str, Any] = {"kind": kind}
        if kind in ("map", "classify", "extract"):
            step["template"] = f"{instruction}\n\nText: {{{column}}}"
            self.decided["step0.template"] = "default:query-as-instruction"
        if kind == "map":
            step["output"] = OUTPUTS["map"]
        elif kind == "filter":
            step["template"] = f"Request: {instruction}\nShould this text be kept?\n\nText: {{{column}}}"
            self.decided["step0.template"] = "default:query-as-instruction"
        elif kind == "classify":
            step.update(labels=[str(l) for l in fields.get("labels", [])], output=OUTPUTS["classify"])
        elif kind == "extract":
            names = [re.sub(r"\W+", "_", str(f)).strip("_").lower() for f in fields.get("fields", [])]
            props = {n: {"type": "string", "maxLength": 200} for n in dict.fromkeys(n for n in names if n)}
            step.update(output_schema={"type": "object", "properties": props}, output=OUTPUTS["extract"], max_tokens=256)
            self.decided["step0.field_types"] = "default:string"
        elif kind == "redact":
            step.update(column=column, entities=fields.get("entities") or ENTITIES, output=OUTPUTS["redact"])
        elif kind == "chunk":
            step.update(column=column, max_chars=fields.get("max_chars", 4000), by_headings=bool(fields.get("by_headings")),
                        output=OUTPUTS["chunk"])
        elif kind == "reduce":
            key = fields.get("group_by", "none")
            step.update(template=f"{instruction}\n\nTexts:\n{{{column}}}", group_by=[] if key in ("none", column) else [key],
                        output=OUTPUTS["reduce"])
            self.decided["step0.template"] = "default:query-as-instruction"
        return Plan.model_validate({"steps": [step], "query": self.query})


def plan_query(query: str, metadata: TableMetadata, settings: Settings, client: LLMClient | None = None) -> Plan:
    """Ask the planner model for a plan for ``query`` over a table described by ``metadata``.

    Returns:
        a plan checked against the table's columns and the tool registry, with ``provenance``.

    Raises:
        PlanError: an empty query, a table without a string column, or no valid plan after the
            repair round and the rule fallback; the message shows the query, the table metadata,
            the model's answers and why the last one was rejected.
    """
    if not query or not query.strip():
        raise PlanError("the query is empty; say what to do with the table, e.g. 'classify each text as spam or not'")
    if not re.search(r"[^\W\d_]", query):
        raise PlanError(f"the query {query!r} has no words; say what to do with the table")
    query = unicodedata.normalize("NFC", query.strip())
    client = client or LLMClient(settings.with_overrides(**{"spark.apwa.llm.frequencyPenalty": "0"}))
    state = _Staged(query, metadata, settings, client)
    columns = [c.name for c in metadata.columns]
    action, error = "", None
    try:
        action, kind = state.kind()
        fields = state.fields(kind)
        for attempt in ("model", "repair", "rule"):
            try:
                plan = state.build(kind, fields)
                plan.check(columns, set(registry()))
                plan.provenance = PlanProvenance(model=settings.llm.model, action=action, decided_by=state.decided,
                                                 llm_calls=state.calls)
                return plan
            except (ValidationError, PlanError) as exc:
                error = str(exc).splitlines()[0] if isinstance(exc, PlanError) else _short(exc)
            if attempt == "model":
                fields = state.fields(kind, note=f"\nA previous answer {state.answers[-1]} was rejected: {error}")
            elif attempt == "repair" and kind == "classify" and len(or_list_labels(query)) >= 2:
                fields = {"labels": or_list_labels(query)}
                state.decided["step0.labels"] = "rule:or-list"
            else:
                break
    except PlanError as exc:
        error = str(exc)
    raise PlanError(
        f"could not plan the query {query!r}.\nTable the planner saw:\n{metadata.render()}\n"
        f"Action chosen: {action or '-'}\nModel answers: {'; '.join(state.answers) or '-'}\nWhy it was rejected: {error}\n"
        "Rephrase the query, name the column to use, or write the plan by hand (see `apwa-spark run --plan`)."
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
