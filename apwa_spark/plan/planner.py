"""The planner agent (APWA's *manager*): a plain-language query + table metadata ──► a :class:`Plan`.

The planner sees only :class:`~apwa_spark.plan.metadata.TableMetadata` (bounded), never the data.
It asks the model for the plan through structured output: the response format is the plan's JSON
schema, narrowed to this table (column-valued fields may only name its columns). Few-shot examples
show one plan per step kind. The answer is validated (pydantic, then :meth:`Plan.check` against the
columns and the tool registry); one repair round feeds the validation error back; a query that
still does not map raises :class:`PlanError` showing the query, what the planner saw and what the
model answered.
"""

from __future__ import annotations

import copy
import json

from pydantic import ValidationError

from apwa_spark.config import Settings
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.plan.ir import Plan, PlanError
from apwa_spark.plan.metadata import TableMetadata
from apwa_spark.tools import registry

EXAMPLES = [
    ("Is each review positive or negative?",
     {"steps": [{"kind": "classify", "template": "Review: {text}", "labels": ["positive", "negative"], "output": "sentiment"}]}),
    ("Keep only the messages that mention a refund.",
     {"steps": [{"kind": "filter", "template": "Does this message mention a refund? {text}"}]}),
    ("Extract the title and year of each document.",
     {"steps": [{"kind": "extract", "template": "{text}", "output": "fields", "output_schema": {
         "type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}}}]}),
    ("Remove names, e-mails and phone numbers.",
     {"steps": [{"kind": "redact", "column": "text", "entities": ["person", "email", "phone"], "output": "redacted"}]}),
    ("Translate each text to French.",
     {"steps": [{"kind": "map", "template": "Translate to French: {text}", "output": "french"}]}),
    ("Split the documents into pieces of at most 2000 characters.",
     {"steps": [{"kind": "chunk", "column": "text", "max_chars": 2000, "output": "piece"}]}),
    ("Summarize all texts of each author into one summary.",
     {"steps": [{"kind": "reduce", "template": "Summarize: {text}", "group_by": ["author"], "output": "summary"}]}),
]

PLANNER_TEMPLATE = Template(
    instruction=(
        "You turn a request about a table into a plan: JSON with a list of steps. Step kinds: map (template ──► "
        "new text column), filter (yes/no question ──► keep rows), classify (template + labels ──► label column), "
        "extract (template + JSON schema ──► struct column), redact (column + entity types ──► redacted text), "
        "chunk (column ──► pieces), reduce (group_by + template ──► one summary per group). Templates name "
        "columns in braces, like {text}.\n\n"
        + "\n".join(f"Request: {q}\nPlan: {json.dumps(p)}" for q, p in EXAMPLES)
    ),
    cue="Plan:",
)


def plan_schema(columns: list[str]) -> dict:
    """The plan's JSON schema with column-valued fields narrowed to ``columns`` (the grammar then
    cannot name a column the table lacks)."""
    schema = copy.deepcopy(Plan.json_schema())
    for definition in schema.get("$defs", {}).values():
        props = definition.get("properties", {})
        for field in ("column", "order_by"):
            if field in props:
                props[field] = {"type": "string", "enum": columns}
        if "group_by" in props:
            props["group_by"] = {"type": "array", "items": {"type": "string", "enum": columns}}
    return schema


def plan_query(query: str, metadata: TableMetadata, settings: Settings, client: LLMClient | None = None) -> Plan:
    """Ask the planner model for a plan for ``query`` over a table described by ``metadata``.

    Raises:
        PlanError: no valid plan after one repair round; the message shows the query, the table
            metadata and the model's last answer with its validation error.
    """
    if not query or not query.strip():
        raise PlanError("the query is empty; say what to do with the table, e.g. 'classify each text as spam or not'")
    client = client or LLMClient(settings)
    columns = [c.name for c in metadata.columns]
    schema = plan_schema(columns)
    request = f"Table:\n{metadata.render()}\n\nRequest: {query.strip()}"
    answer, error = None, None
    for attempt in range(2):
        text = request if attempt == 0 else (
            f"{request}\n\nA previous plan was rejected: {error}\nPrevious plan: {answer}\nWrite a corrected plan.")
        [completion] = client.complete([Task(PLANNER_TEMPLATE, text, 512, json_schema=schema)])
        answer = completion.text
        if completion.status != "ok":
            error = completion.error
            continue
        try:
            plan = Plan.model_validate({**json.loads(answer), "query": query})
            plan.check(columns, set(registry()))
            return plan
        except (ValidationError, PlanError, ValueError) as exc:
            error = str(exc).splitlines()[0] if isinstance(exc, PlanError) else str(exc)
    raise PlanError(
        f"could not plan the query {query!r}.\nTable the planner saw:\n{metadata.render()}\n"
        f"Last answer: {answer}\nWhy it was rejected: {error}\n"
        "Rephrase the query, name the column to use, or write the plan by hand (see `apwa-spark run --plan`)."
    )
