"""The planner agent (APWA's *manager*): a plain-language query + table metadata ──► a :class:`Plan`.

The planner sees only :class:`~apwa_spark.plan.metadata.TableMetadata` (bounded), never the data.
A compound query ("label each scene as comic or tragic, then keep only the tragic ones") becomes a
plan of several steps that chain: each step reads what the steps before it leave.

**Staged** (base models; ``spark.apwa.planner.mode`` ``staged``, or ``auto`` on a completion-style
endpoint). The embedded model (Gemma 3 270M, a base model) cannot write a whole plan as JSON but can
make one narrow choice at a time, so planning is decomposed:

0. **Clauses.** The query is split into clauses (:func:`split_clauses`: sentence ends, ``then``,
   ``and``/commas before an action verb), each planned in turn against the columns, text column,
   group keys and known values (a classify step's labels) the steps before it leave.
1. **Kind stage.** The model names the clause's *action* (``translate``, ``keep``, ``classify``,
   ``extract``, ``hide``, ``split``, ``summarize all`` …), constrained to the keys of
   :func:`actions` (each step kind's spec), after few-shot ``Request: … / Action: …`` pairs that come
   first in the prompt and are byte-identical across calls (the endpoint's prefix cache pays for
   them once). The action maps to a step kind. Measured on 22 development queries with the 270M
   model: naming an action word got 22/22 kinds right; naming the kind itself (``map``, ``redact``
   …) got 13/22 at best, and 3/22 with kind definitions in the prompt. Then each kind's *route*
   may take the clause by rule for a cheaper kind: a "keep" clause that names a column and a value,
   or a label an earlier step writes, becomes a ``where`` (no LLM call per row); a clause about
   columns becomes a ``select``.
2. **Field stage** (only for kinds with fields the clause must supply): one call with a per-kind
   narrowed JSON schema. Completion style: labels, extract fields and chunk sizes are enums of the
   clause's own words and numbers, group keys an enum of the key columns, entity types an enum of
   the known types. Chat style: labels and field names are free strings.
3. **Deterministic defaults** for what a small model cannot fill well: the text column is the
   last text an earlier step wrote, else the string column with the longest median length; a
   group key the clause names is taken as it is; templates use the clause itself as the executor's
   instruction; output names are per kind (with the step's index when taken).
4. **Validation** (pydantic, then :meth:`Plan.check` of the steps so far against the columns and
   the tool registry); on failure one repair round repeats the field stage with the error fed
   back; if that fails too, a clearly named rule fallback (``rule:or-list`` for labels) is tried,
   and otherwise :class:`PlanError` shows the query, the clauses, the metadata and the model's
   answers.

**Whole** (instruct models; ``whole``, or ``auto`` on a chat-style endpoint): one call whose
response format is the whole plan's JSON schema (:func:`plan_schema`, columns narrowed to the
table's); a plan that fails validation falls back to the staged planner.

Every plan carries :class:`~apwa_spark.plan.ir.PlanProvenance`: the planner used, the clauses, the
action words, which stage decided each choice per step (``step0.kind``, ``step1.labels`` … ──►
``model``, ``model-repair``, ``default:…``, ``rule:…``), and the LLM calls spent.
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

#: Completion cap of the whole-plan call, tokens (a plan of three or four steps fits).
WHOLE_PLAN_TOKENS = 320
#: Longest median text (characters) of a column the planner offers as a group key.
KEY_MAX_CHARS = 64
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


def clause_verbs() -> set[str]:
    """Words that start a clause of a compound query after "and": the first words of every planned
    kind's action words, and ``summarize``."""
    return {word.split()[0] for word in actions()} - {"only"} | {"summarize"}


def split_clauses(query: str) -> list[str]:
    """A compound query ──► its clauses, in order: split at sentence ends, ``;``, ``then``, ``after
    that``, ``finally``, and at ``and`` or a comma when an action verb follows (:func:`clause_verbs`: ``… and summarize``,
    not ``names and e-mails``, nor ``the id and label columns``). A piece that names no action verb is joined to the next one
    (``Which scenes take place at night? Keep those.`` stays one clause)."""
    verbs = "|".join(sorted(map(re.escape, clause_verbs()), key=len, reverse=True))
    pieces = re.split(rf"(?<=[.!?;])\s+|\s*;\s*|,?\s+(?:and\s+)?then\b,?\s*|,?\s+after that\b,?\s*|,?\s+finally\b,?\s*"
                      rf"|(?:,?\s+and|,)\s+(?=(?:{verbs})\b(?!\s+columns?\b))", query.strip(), flags=re.I)
    pieces = [re.sub(r"^(?:and\s+)?(?:then|finally|after that)\b,?\s*", "", p.strip(" ,"), flags=re.I) for p in pieces if p]
    pieces = [p for p in pieces if p.strip(" ,.;")]
    has_verb = lambda p: re.search(rf"\b(?:{verbs})\b", p, re.I) is not None
    clauses: list[str] = []
    pending = ""
    for piece in pieces:
        piece = f"{pending} {piece}".strip() if pending else piece
        if has_verb(piece):
            clauses.append(piece[0].upper() + piece[1:])
            pending = ""
        else:
            pending = piece
    if pending:
        clauses[-1:] = [f"{clauses[-1]} {pending}"] if clauses else [pending]
    return clauses


def key_columns(metadata: TableMetadata) -> list[str]:
    """Columns rows may be grouped by: fewer distinct values than rows, and not long text (median
    length at most :data:`KEY_MAX_CHARS` characters)."""
    return [c.name for c in metadata.columns if c.distinct_estimate < max(metadata.rows, 2)
            and (c.length_quantiles or [0, 0, 0])[1] <= KEY_MAX_CHARS]


class _Staged:
    """One planning attempt's state: the client, what was asked and answered, who decided what."""

    def __init__(self, query: str, metadata: TableMetadata, settings: Settings, client: LLMClient):
        self.query, self.metadata, self.settings, self.client = query, metadata, settings, client
        self.answers: list[str] = []
        self.actions: list[str] = []
        self.calls = 0
        self.decided: dict[str, str] = {}
        self.columns = [c.name for c in metadata.columns]

    def ask(self, template: Template, text: str, schema: dict, max_tokens: int) -> Any:
        [c] = self.client.complete([Task(template, text, max_tokens, json_schema=schema)])
        self.calls += c.calls
        self.answers.append(f"{c.text!r}" + (f" ({c.error})" if c.status != "ok" else ""))
        if c.status != "ok":
            raise PlanError(f"the planner model gave no valid answer: {c.error}")
        return json.loads(c.text)

    def context(self, clause: str, steps: list[dict]) -> PlanningContext:
        """What the planner knows when it plans ``clause`` after ``steps``: the columns, text column,
        key columns and known values the steps before leave."""
        columns = {c.name: c.type for c in self.metadata.columns}
        text = text_column(self.metadata)
        keys = key_columns(self.metadata)
        values: dict[str, list[str]] = {}
        for config in Plan.model_validate({"steps": steps}).steps if steps else []:
            after = config.columns_after(list(columns))
            columns = {c: columns.get(c, _output_type(config, c)) for c in after}
            text = config.text_output() or (text if text in columns else next(iter(columns), text))
            values.update(config.key_outputs())
            keys = [k for k in keys if k in columns] + [k for k in config.key_outputs() if k not in keys]
        return PlanningContext(
            query=clause, words=query_words(clause), numbers=query_numbers(clause), columns=columns, text_column=text,
            free=self.settings.llm.prompt_style == "chat", key_columns=keys, decided=self.decided,
            prefix=f"step{len(steps)}", values={k: v for k, v in values.items() if k in columns})

    def kind(self, ctx: PlanningContext) -> str:
        """The action stage, then the kinds' routes: a clause the columns answer takes the cheap path."""
        words = actions()
        action = self.ask(action_template(), f"Request: {ctx.query}", {"type": "string", "enum": list(words)}, 8)
        self.actions.append(action)
        ctx.decide("kind", "model")
        for kind in planned_kinds():
            if kind.planner.route is not None and kind.planner.route(ctx, words[action]):
                ctx.decide("kind", f"rule:{kind.name}-instead-of-{words[action]}")
                return kind.name
        return words[action]

    def fields(self, ctx: PlanningContext, kind: str, note: str = "") -> dict:
        schema = step_kinds()[kind].planner.field_schema(ctx)
        if schema is None:
            return {}
        columns = ", ".join(ctx.columns)
        answer = self.ask(field_template(kind), f"Columns: {columns}\nRequest: {ctx.query}{note}", schema, 96)
        for key in answer:
            ctx.decide(key, "model-repair" if note else "model")
        return answer

    def build(self, ctx: PlanningContext, kind: str, fields: dict, steps: list[dict]) -> dict:
        """One step from the kind, the model's fields and the kind's deterministic defaults, checked
        with the steps before it; an output name already taken gets the step's index."""
        ctx.decided.setdefault(f"{ctx.prefix}.column", "default:longest-text-column" if not steps else "default:last-text-column")
        step = step_kinds()[kind].planner.build(ctx, fields)
        if step.get("output") in ctx.columns:
            step["output"] = f"{step['output']}{len(steps)}"
        Plan.model_validate({"steps": steps + [step]}).check(self.columns, set(registry()))
        return step

    def clause(self, clause: str, steps: list[dict]) -> dict:
        """Plan one clause after ``steps``: kind, fields, validation, one repair round, the rule fallback.

        Raises:
            PlanError: no valid step for the clause (the first line says why).
        """
        ctx = self.context(clause, steps)
        kind = self.kind(ctx)
        fields = self.fields(ctx, kind)
        for attempt in ("model", "repair", "rule"):
            try:
                return self.build(ctx, kind, fields, steps)
            except (ValidationError, PlanError) as exc:
                error = str(exc).splitlines()[0] if isinstance(exc, PlanError) else _short(exc)
            if attempt == "model":
                fields = self.fields(ctx, kind, note=f"\nA previous answer {self.answers[-1]} was rejected: {error}")
            elif attempt == "repair" and kind == "classify" and len(or_list_labels(clause)) >= 2:
                fields = {"labels": or_list_labels(clause)}
                ctx.decide("labels", "rule:or-list")
            else:
                break
        raise PlanError(f"clause {clause!r}: {error}")

    def whole(self) -> Plan:
        """One call with the whole plan's JSON schema (instruct models), checked.

        Raises:
            PlanError: the answer is not a valid plan for the table.
        """
        kinds = "\n".join(f"- {k.name}: {k.planner.description}" for k in planned_kinds())
        template = Template(instruction="Write a plan of steps over a table for the request, as JSON. Step kinds:\n"
                            + kinds + "\nTemplates name columns in braces, e.g. {text}.", cue="Plan:")
        columns = ", ".join(f"{c.name} ({c.type})" for c in self.metadata.columns)
        answer = self.ask(template, f"Columns: {columns}\nRequest: {self.query}", plan_schema(self.columns), WHOLE_PLAN_TOKENS)
        try:
            plan = Plan.model_validate({**answer, "query": self.query})
        except ValidationError as exc:
            raise PlanError(_short(exc)) from None
        plan.check(self.columns, set(registry()))
        self.decided.update({"planner": "model", **{f"step{i}.kind": "model" for i in range(len(plan.steps))}})
        return plan

    def provenance(self, planner: str, clauses: list[str]) -> PlanProvenance:
        return PlanProvenance(planner=planner, model=self.settings.llm.model, clauses=clauses, actions=self.actions,
                              decided_by=self.decided, llm_calls=self.calls)


def _output_type(step, column: str) -> str:
    """The Spark type a planned step gives a column it adds (struct for extract's, int for indexes)."""
    if step.kind == "extract":
        return "struct"
    return "int" if column.endswith("_index") else "string"


def whole_plan(settings: Settings) -> bool:
    """Whether the planner writes the whole plan in one call (``spark.apwa.planner.mode``)."""
    mode = settings.planner.mode
    return mode == "whole" or (mode == "auto" and settings.llm.prompt_style == "chat")


def plan_query(query: str, metadata: TableMetadata, settings: Settings, client: LLMClient | None = None) -> Plan:
    """Ask the planner model for a plan for ``query`` over a table described by ``metadata``.

    Staged (base models, ``spark.apwa.planner.mode`` ``staged``, or ``auto`` on a completion-style
    endpoint): the query is split into clauses (:func:`split_clauses`) and each clause is planned
    in turn against the columns the steps before it leave, so that steps chain (a step's output is
    the next one's text column; a ``reduce`` after a ``classify`` may group by its label; a "keep"
    clause the columns answer becomes a ``where``). Whole (instruct models: ``whole``, or ``auto``
    on a chat-style endpoint): one call with the whole plan's JSON schema; a rejected whole plan
    falls back to the staged planner, and the provenance says so.

    Returns:
        a plan checked against the table's columns and the tool registry, with ``provenance``
        (clauses, action words, who decided each choice per step, planner LLM calls).

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
    text_column(metadata)  # a table without a string column fails here, before any call
    if whole_plan(settings):
        try:
            plan = state.whole()
            plan.provenance = state.provenance("whole", [query])
            return plan
        except PlanError as exc:
            state.decided["planner"] = f"rule:staged-after-whole-plan-rejected ({str(exc).splitlines()[0][:120]})"
    clauses = split_clauses(query)
    steps: list[dict] = []
    error = None
    try:
        for clause in clauses:
            steps.append(state.clause(clause, steps))
        plan = Plan.model_validate({"steps": steps, "query": query})
        plan.provenance = state.provenance("staged", clauses)
        return plan
    except PlanError as exc:
        error = str(exc)
    raise PlanError(
        f"could not plan the query {query!r}.\nTable the planner saw (sample values left out):\n{metadata.render(samples=False)}\n"
        f"Clauses: {clauses}\nActions chosen: {', '.join(state.actions) or '-'}\nModel answers: {'; '.join(state.answers) or '-'}\n"
        f"Why it was rejected: {error}\n"
        "Rephrase the query, name the column to use, or write the plan by hand (see `apwa-spark run --plan`)."
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
