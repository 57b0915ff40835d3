"""Executor agents for plan steps: plain functions over a batch of expanded prompts, no Spark.

Each returns one :class:`StepResult` per input, in order, ``ok`` or ``error``; a null input (a
placeholder column was NULL) is an ``error`` row (``NullInput``) without an LLM call. Structured
answers are constrained by a JSON schema sent with the request (llama.cpp grammars, OpenAI
structured outputs) and validated on return (:mod:`apwa_spark.llm.client`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from apwa_spark.config import Settings
from apwa_spark.llm.client import Completion, LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.plan.schema import coerce, json_schema_to_spark
from apwa_spark.tools import Span, get_tool

MAP_TEMPLATE = Template(instruction="Do what the request below asks. Answer briefly.", cue="Answer:")
FILTER_TEMPLATE = Template(instruction="Answer the question below with yes or no.", cue="Answer (yes or no):")
CLASSIFY_TEMPLATE = Template(instruction="Choose the one label that fits the text below.", cue="Label:")
CLASSIFY_BATCH_TEMPLATE = Template(
    instruction="Choose the one label that fits each numbered text below. Answer with a JSON array of labels, one per text, in order.",
    cue="Labels, in order:")
EXTRACT_TEMPLATE = Template(instruction="Extract the requested fields from the text below as JSON.", cue="JSON:")
NAMES_TEMPLATE = Template(instruction="List the full names of the people mentioned in the text below, as a JSON array of strings.",
                          cue="Names:")
YES_NO = {"type": "string", "enum": ["yes", "no"]}


@dataclass(frozen=True)
class StepResult:
    """One row's answer: ``value`` (str, bool, label, dict …) and the call's bookkeeping."""

    value: Any
    completion: Completion
    extra: Any = field(default=None)

    @property
    def status(self) -> str:
        return self.completion.status


def _null_aware(prompts: Sequence[str | None], tasks_for, client: LLMClient) -> list[Completion]:
    live = [i for i, p in enumerate(prompts) if p is not None]
    done = client.complete([tasks_for(prompts[i]) for i in live]) if live else []
    out = [Completion.failed("NullInput: a placeholder column is NULL; no LLM call made")] * len(prompts)
    for i, completion in zip(live, done):
        out[i] = completion
    return out


def map_rows(prompts: Sequence[str | None], max_tokens: int, settings: Settings, client: LLMClient | None = None) -> list[StepResult]:
    """``map``: each expanded template ──► free text."""
    client = client or LLMClient(settings)
    results = _null_aware(prompts, lambda p: Task(MAP_TEMPLATE, p, max_tokens), client)
    return [StepResult(c.text if c.status == "ok" else None, c) for c in results]


def filter_rows(prompts: Sequence[str | None], settings: Settings, client: LLMClient | None = None) -> list[StepResult]:
    """``filter``: each expanded predicate ──► True/False (None on error)."""
    client = client or LLMClient(settings)
    results = _null_aware(prompts, lambda p: Task(FILTER_TEMPLATE, p, 4, json_schema=YES_NO), client)
    return [StepResult(json.loads(c.text) == "yes" if c.status == "ok" else None, c) for c in results]


def classify_rows(prompts: Sequence[str | None], labels: list[str], settings: Settings,
                  client: LLMClient | None = None) -> list[StepResult]:
    """``classify``: each expanded template ──► one of ``labels`` (the schema allows no other)."""
    client = client or LLMClient(settings)
    schema = {"type": "string", "enum": list(labels)}
    options = "Labels: " + ", ".join(labels) + "\n\n"
    results = _null_aware(prompts, lambda p: Task(CLASSIFY_TEMPLATE, options + p, 16, json_schema=schema), client)
    return [StepResult(json.loads(c.text) if c.status == "ok" else None, c) for c in results]


def classify_batched(prompts: Sequence[str | None], labels: list[str], batch_rows: int, settings: Settings,
                     client: LLMClient | None = None) -> list[StepResult]:
    """``classify`` with several rows per LLM call: the non-null prompts, ``batch_rows`` at a time,
    become one numbered list; the answer must be a JSON array of exactly that many labels (schema:
    ``minItems = maxItems = rows``, items an enum of ``labels``). A batch's calls and tokens are
    booked on its first row (the others show 0), so sums over rows stay exact; a failed batch gives
    every row in it the batch's error. Null prompts are ``NullInput`` errors without a call."""
    client = client or LLMClient(settings)
    live = [i for i, p in enumerate(prompts) if p is not None]
    batches = [live[k:k + batch_rows] for k in range(0, len(live), batch_rows)]
    options = "Labels: " + ", ".join(labels) + "\n\n"
    tasks = [Task(CLASSIFY_BATCH_TEMPLATE, options + "\n".join(f"{n}. {' '.join(prompts[i].split())}" for n, i in enumerate(b, 1)),
                  8 + 8 * len(b), json_schema={"type": "array", "items": {"type": "string", "enum": list(labels)},
                                               "minItems": len(b), "maxItems": len(b)}) for b in batches]
    out = [StepResult(None, Completion.failed("NullInput: a placeholder column is NULL; no LLM call made"))] * len(prompts)
    for batch, completion in zip(batches, client.complete(tasks) if tasks else []):
        values = json.loads(completion.text) if completion.status == "ok" else [None] * len(batch)
        for n, i in enumerate(batch):
            booked = completion if n == 0 else dataclasses.replace(
                completion, prompt_tokens=0, completion_tokens=0, cached_tokens=0, calls=0, text_tokens=0)
            out[i] = StepResult(values[n], booked)
    return out


def extract_rows(prompts: Sequence[str | None], output_schema: dict, max_tokens: int, settings: Settings,
                 client: LLMClient | None = None) -> list[StepResult]:
    """``extract``: each expanded template ──► a dict shaped to ``output_schema`` (missing fields None)."""
    client = client or LLMClient(settings)
    struct = json_schema_to_spark(output_schema)
    results = _null_aware(prompts, lambda p: Task(EXTRACT_TEMPLATE, p, max_tokens, json_schema=output_schema), client)
    return [StepResult(coerce(json.loads(c.text), struct) if c.status == "ok" else None, c) for c in results]


def redact_rows(texts: Sequence[str | None], entities: list[str], tools: list[str], use_model: bool,
                settings: Settings, client: LLMClient | None = None) -> list[StepResult]:
    """``redact``: rule tools find structured entities; the model, when asked, lists person names,
    which are then found in the text. Each entity becomes ``[ENTITY]``; ``extra`` holds the spans."""
    rule_spans = [[s for tool in tools for s in get_tool(tool).func(t, entities)] if t is not None else []
                  for t in texts]
    if use_model and "person" in entities:
        client = client or LLMClient(settings)
        schema = {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 12}
        names = _null_aware(texts, lambda t: Task(NAMES_TEMPLATE, t, 128, json_schema=schema), client)
    else:
        names = [Completion(text="[]", status="ok") if t is not None else
                 Completion.failed("NullInput: the text is NULL") for t in texts]
    out = []
    for text, spans, completion in zip(texts, rule_spans, names):
        if completion.status != "ok" or text is None:
            out.append(StepResult(None, completion, []))
            continue
        spans = _merge(spans + _name_spans(text, json.loads(completion.text)))
        out.append(StepResult(_apply(text, spans), completion, spans))
    return out


def _name_spans(text: str, names: list[str]) -> list[Span]:
    spans = []
    for name in {n.strip() for n in names if isinstance(n, str) and len(n.strip()) > 2}:
        start = text.find(name)
        while start >= 0:
            spans.append(Span(start, start + len(name), "person", name))
            start = text.find(name, start + 1)
    return spans


def _merge(spans: list[Span]) -> list[Span]:
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def _apply(text: str, spans: list[Span]) -> str:
    parts, last = [], 0
    for span in spans:
        parts += [text[last:span.start], f"[{span.entity.upper()}]"]
        last = span.end
    return "".join(parts) + text[last:]
