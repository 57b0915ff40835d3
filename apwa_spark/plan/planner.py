"""The planner agent (APWA's *manager*): a plain-language query + table metadata ──► a :class:`Plan`.

The planner sees only :class:`~apwa_spark.plan.metadata.TableMetadata` (bounded), never the data.
Planning is decomposed into small grammar-constrained choices, because the embedded model (Gemma 3
270M, a base model) cannot write a whole plan as JSON but can make one narrow choice at a time:

1. **Kind stage.** The model names the request's *action* (``translate``, ``keep``, ``classify``,
   ``extract``, ``hide``, ``split``, ``summarize all`` …), constrained to the keys of
   :func:`actions` (each step kind's spec), after few-shot ``Request: … / Action: …`` pairs that come first in the prompt
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
from apwa_spark.plan.step import PlanningContext, step_kinds
from apwa_spark.tools import registry

STOPWORDS = set("""a an the and or of to in on at by for from with as into is are be each every all any this that these
those it its their them they than then only one per into each its as json text texts row rows table""".split())


def planned_kinds() -> list:
    """The step kinds the planner may pick (those with a planner spec), in prompt order (rank)."""
    return sorted((k for k in step_kinds().values() if k.planner is not None), key=lambda k: (k.planner.rank, k.name))


def actions() -> dict[str, str]:
    """Action word the model may name ──► step kind, from every planned kind's spec."""
    return {word: kind.name for kind in planned_kinds() for word in kind.planner.actions}


def action_template() -> Template:
    """The action stage's few-shot prompt: each planned kind's (request, action) examples."""
    examples = [e for kind in planned_kinds() for e in kind.planner.examples]
    return Template(instruction="Name the action each request asks for.\n\n"
                    + "\n\n".join(f"Request: {q}\n\nAction: {a}" for q, a in examples), cue="Action:")


def field_template(kind: str) -> Template:
    """The field stage's few-shot prompt for ``kind``: its spec's (request, fields) examples."""
    examples = step_kinds()[kind].planner.field_examples
    return Template(instruction="Fill in the fields each request asks for, as JSON.\n\n"
                    + "\n\n".join(f"Request: {q}\n\nFields: {json.dumps(f)}" for q, f in examples), cue="Fields:")


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
        self.answers: list[str] = []
        self.calls = 0
        self.context = PlanningContext(
            query=query, words=query_words(query), numbers=query_numbers(query),
            columns={c.name: c.type for c in metadata.columns}, text_column=text_column(metadata),
            free=settings.llm.prompt_style == "chat",
            key_columns=[c.name for c in metadata.columns if c.distinct_estimate < max(metadata.rows, 2)])
        self.decided = self.context.decided

    def ask(self, template: Template, text: str, schema: dict, max_tokens: int) -> Any:
        [c] = self.client.complete([Task(template, text, max_tokens, json_schema=schema)])
        self.calls += c.calls
        self.answers.append(f"{c.text!r}" + (f" ({c.error})" if c.status != "ok" else ""))
        if c.status != "ok":
            raise PlanError(f"the planner model gave no valid answer: {c.error}")
        return json.loads(c.text)

    def kind(self) -> tuple[str, str]:
        words = actions()
        action = self.ask(action_template(), f"Request: {self.query}", {"type": "string", "enum": list(words)}, 8)
        self.decided["kind"] = "model"
        return action, words[action]

    def fields(self, kind: str, note: str = "") -> dict:
        schema = step_kinds()[kind].planner.field_schema(self.context)
        if schema is None:
            return {}
        columns = ", ".join(self.context.columns)
        answer = self.ask(field_template(kind), f"Columns: {columns}\nRequest: {self.query}{note}", schema, 96)
        for key in answer:
            self.context.decide(key, "model-repair" if note else "model")
        return answer

    def build(self, kind: str, fields: dict) -> Plan:
        """A one-step plan from the kind, the model's fields and the kind's deterministic defaults."""
        self.decided.setdefault("step0.column", "default:longest-text-column")
        step = step_kinds()[kind].planner.build(self.context, fields)
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
        f"could not plan the query {query!r}.\nTable the planner saw (sample values left out):\n{metadata.render(samples=False)}\n"
        f"Action chosen: {action or '-'}\nModel answers: {'; '.join(state.answers) or '-'}\nWhy it was rejected: {error}\n"
        "Rephrase the query, name the column to use, or write the plan by hand (see `apwa-spark run --plan`)."
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
