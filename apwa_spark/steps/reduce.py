"""``reduce``: group keys + template + token budget ──► one row per group, by multi-round
hierarchical reduce over Delta tables (many-to-one); with ``levels``, a whole hierarchy (chunk ──►
scene ──► act ──► play ──► corpus), each level's rounds reading the level below.

This module drives the reduce engine (:mod:`apwa_spark.hierarchy`: packing, the failure policy) on
Spark, for every caller that reduces over Delta: a plan's ``reduce`` step and the summarize job
(which is a plan, :func:`apwa_spark.summarize.summarize_plan`). Every table it writes is a *node
table* (:func:`node_schema`): the group keys, ``level``, ``round``, ``node_id``, ``ordinal``,
``children`` (the lineage: ids of the nodes below), provenance (run, plan, step, model, endpoint,
template hash), the text ``<output>`` and its tokens, the call's counts and ``status``, and
``failed_inputs`` (failed inputs below the node that its text does not cover).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

from apwa_spark.hierarchy import MAX_ROUNDS, USABLE, Child, ReduceDidNotConverge, pack_children, reduce_groups, run_rounds
from apwa_spark.incremental import INPUT_HASH, INPUT_KEY, node_hash
from apwa_spark.llm.client import Completion, calls_in_flight
from apwa_spark.plan import agents
from apwa_spark.plan.step import (CHARS_PER_TOKEN, Cardinality, Estimate, InputStats, PlanError, PlannerSpec,
                                  PlanningContext, PromptConfig, RunContext, StepKind, TemplateStepConfig, placeholders)
from apwa_spark.plan.udf import META_SCHEMA, template_hash
from apwa_spark.runs import CALL_FIELDS, PROVENANCE_FIELDS, JobContext, call_fields, write_table

#: Node-table columns between the group keys and the text (see :func:`node_schema`).
NODE_FIELDS = [
    StructField("level", StringType()),
    StructField("round", IntegerType()),
    StructField("node_id", StringType()),
    StructField("ordinal", LongType()),
    StructField("children", ArrayType(StringType())),
    StructField("content_hash", StringType()),
    StructField("input_key", StringType()),
]


class Level(BaseModel):
    """One level of a hierarchical reduce: its name (the ``level`` of its rows, its tables
    ``<name>_r<k>`` and node ids ``<name>:<key values>:r<k>``), its group keys (``[]``: the whole
    table) and its prompt (default: the step's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    group_by: list[str] = Field(default_factory=list)
    prompt: PromptConfig | None = None


class ReduceStep(TemplateStepConfig):
    """Group keys + template + token budget ──► one row per group, by multi-round hierarchical
    reduce over Delta tables (many-to-one). The template's placeholder names the text column.

    With ``levels`` (finest first) the step reduces a whole hierarchy and its result is the top
    level's node table; without, it reduces ``group_by`` groups and its result is the group keys,
    ``<output>`` and ``<name>_meta``. Example, the summarize job's reduce::

        - kind: reduce
          template: "{summary}"
          order_by: [ordinal, chunk_index]
          leaf_id: [scene_id, chunk_index]
          leaf_level: chunk
          levels: [{name: scene, group_by: [play, act, scene_id]}, {name: act, group_by: [play, act]},
                   {name: play, group_by: [play]}]
    """

    kind: Literal["reduce"] = "reduce"
    group_by: list[str] = Field(default_factory=list, description="group keys; empty: the whole table")
    order_by: list[str] = Field(default_factory=list, description="document order of the children (columns, NULLs first)")
    token_budget: int = Field(1200, ge=64, description="tokens of child texts per reduce call (the endpoint's tokenizer)")
    output: str = "summary"
    prompt: PromptConfig | None = Field(None, description="the shared instruction and cue; default: do what the template asks")
    levels: list[Level] = Field(default_factory=list, description="a hierarchy, finest level first; empty: one level by group_by")
    leaf_id: list[str] = Field(default_factory=list, description="columns whose values, joined by '#', name an input row "
                                                                  "in the lineage; empty: its ordinal")
    leaf_level: str = Field("", description="the level name of the input rows, and their table's name; default: "
                                            "level <name>, table <name>_r0")
    cardinality: ClassVar[Cardinality] = Cardinality.MANY_TO_ONE

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_column(cls, value):
        return [value] if isinstance(value, str) else ([] if value is None else value)

    @model_validator(mode="after")
    def _levels_or_group_by(self) -> "ReduceStep":
        if self.levels and self.group_by:
            raise ValueError("a reduce step takes either levels (a hierarchy) or group_by (one level), not both")
        return self

    def keys(self) -> list[str]:
        """Every group key of every level, in order of first use."""
        return list(dict.fromkeys(k for level in self.levels for k in level.group_by)) if self.levels else list(self.group_by)

    def reads(self) -> list[str]:
        return list(dict.fromkeys(placeholders(self.template) + self.keys() + self.order_by + self.leaf_id))

    def writes(self) -> list[str]:
        return [f.name for f in NODE_FIELDS] + [self.output] if self.levels else [self.output]

    def text_output(self) -> str | None:
        return self.output

    def columns_after(self, available: list[str]) -> list[str]:
        return self.keys() + self.writes()

    def hierarchy(self, name: str) -> list[Level]:
        return self.levels or [Level(name=name, group_by=self.group_by, prompt=self.prompt)]


def node_schema(keys: StructType, output: str) -> StructType:
    """A node table's schema, every column nullable: ``keys`` (the group keys' fields), then
    :data:`NODE_FIELDS`, provenance, ``<output>`` and ``<output>_tokens``, the call fields and
    ``failed_inputs``."""
    fields = [*keys.fields, *NODE_FIELDS, *PROVENANCE_FIELDS, StructField(output, StringType()),
              StructField(f"{output}_tokens", IntegerType()), *CALL_FIELDS, StructField("failed_inputs", LongType())]
    return StructType([StructField(f.name, f.dataType, True) for f in fields])


def compile_reduce(df: DataFrame, name: str, step: ReduceStep, run: RunContext) -> DataFrame:
    """Multi-round hierarchical reduce through the engine of :mod:`apwa_spark.hierarchy`.

    The input rows become the leaf nodes (table ``<leaf_level>``, or ``<name>_r0``; their status is the status of
    the step that wrote the text column, or ``error``/``EmptyInput`` for NULL or blank text). Then,
    level by level, rounds (one Delta table ``<level>_r<k>`` each) pack each group's children, in
    ``order_by`` order (NULLs first, as
    Spark's ascending sort), under ``token_budget`` tokens counted by the endpoint's tokenizer
    (``LLMClient.count_tokens``: llama.cpp ``/tokenize``; ``ceil(chars / 3)`` where the endpoint has
    none), until each group has one row. Failed and empty children are left out of a summary and
    counted: the parent is ``partial`` (``ChildrenFailed``), or an ``error`` when nothing was left.

    A round is ``repartition(level keys)`` into ``min(defaultParallelism, rows)`` partitions (one
    partition, without a shuffle, where all its calls fit in one task: :func:`_spread`), then
    ``mapInPandas``: each task reduces all the groups of its partition in one engine call, so their
    LLM calls are in flight together (up to ``llm.concurrency``), not one group's one to three.

    With ``run.increment`` (:mod:`apwa_spark.incremental`), the leaves the output's last run left as
    they are join the new ones, each round runs beside the last run's rows of its table and keeps
    a parent whose id and content hash are unchanged, and every table is updated with one MERGE on
    ``node_id`` (none when nothing changed). On a re-run, a level's commit is queued on the run's
    :class:`~apwa_spark.runs.CommitQueue` (``run.commits``) and made while the next level computes
    from the rows it commits; the top level's rows are returned while its commit may still be
    queued (the run's result is written meanwhile, and the run waits for the queue at its end).

    Returns:
        with ``levels``: the top level's node table; else the group keys, ``<output>`` and ``<name>_meta``.

    Raises:
        PlanError: the template names more than one text column, or the rounds do not converge.
    """
    text = text_column(name, step)
    keys = step.keys()
    leaf = step.leaf_level or name
    increment = run.increment if run.increment and run.increment.reuse else None
    how = "merge" if increment else "overwrite"
    leaves = _leaves(df, name, step, text, leaf, run)
    if increment and increment.kept is not None:
        leaves = leaves.unionByName(increment.kept)
    leaves = _ranked(leaves, step)
    commits = run.commits if increment else None  # a re-run's commits go on while the next level computes
    table = write_table(run.store, run.tables, step.leaf_level or f"{name}_r0", leaves, how=how,
                        run_id=run.job.run_id, note=increment.commit_note() if increment else None, commits=commits)
    schema = node_schema(StructType([table.schema[k] for k in keys]), step.output)
    for level in step.hierarchy(name):
        def write_round(round_no: int, level: Level = level) -> str:
            nonlocal table
            below, round_name = run.tables[-1].table, f"{level.name}_r{round_no}"
            source = table.select(*schema.fieldNames())  # less a leaf's order_<i>
            fn = _reduce_partition_fn(step, level, keys, text, round_no, run.job)
            last = increment.last_round(run.store, round_name, schema.fieldNames()) if increment else None
            rows = source.unionByName(last) if last is not None else source  # the last run's nodes, to keep
            spread = _spread(rows, level, run.tables[-1].rows, run.job)
            table = write_table(run.store, run.tables, round_name, spread.mapInPandas(fn, schema), below, how,
                                run.job.run_id, groups=_groups(), commits=commits)
            return round_name

        def groups_left(_: str) -> bool:  # some group of the round just written still has more than one row
            return run.tables[-1].groups < run.tables[-1].rows

        try:
            run_rounds(write_round, groups_left, f"reduce step {name!r}, level {level.name!r}")
        except ReduceDidNotConverge as e:
            raise PlanError(str(e)) from None
    # ``table``: the top round's rows as committed, or on a re-run as they are being committed (the
    # run waits for the queue at its end)
    if step.levels:
        return table
    meta = F.struct(*[F.col(f.name) for f in META_SCHEMA.fields]).alias(f"{name}_meta")
    return table.select(*keys, step.output, meta)


def _spread(rows: DataFrame, level: Level, children: int, job: JobContext) -> DataFrame:
    """A round's rows (``children`` of them from the table below, and on a re-run the last run's rows
    of the round) in partitions that keep each group whole.

    ``repartition(level keys)`` into ``min(defaultParallelism, children)`` partitions; but one
    partition, without a shuffle (``coalesce(1)``), where the level has no group keys or where the
    round's LLM calls (at most ``children // 2``: a call takes two children or more) all fit in one
    task's calls in flight (:func:`~apwa_spark.llm.client.calls_in_flight`), as at the top of a
    hierarchy (one group, a handful of children): more partitions would only add a shuffle and
    empty tasks."""
    if not level.group_by or children // 2 <= calls_in_flight(job.settings, job.tasks):
        return rows.coalesce(1)
    return rows.repartition(min(job.tasks, children), *level.group_by)


def parent_id(base: str, n: int, count: int) -> str:
    """The id of parent ``n`` of the ``count`` a group's round made: ``<base>`` alone, else
    ``<base>.0``, ``<base>.1`` … (``base``: ``<level>:<group keys>:r<round>``)."""
    return base if count == 1 else f"{base}.{n}"


def _groups() -> Column:
    """The aggregate counting the groups a round reduced, without a distinct (one shuffle less):
    every group has exactly one parent whose id (:func:`parent_id`) has no ``.<n>`` suffix with n ≥ 1."""
    return F.count_if(~F.col("node_id").rlike(r":r\d+\.[1-9]\d*$"))


def numbered(texts: list[str]) -> str:
    """A reduce call's input: the children's texts in document order, ``1. …`` one per line."""
    return "\n".join(f"{i}. {t.strip()}" for i, t in enumerate(texts, 1))


def text_column(name: str, step: ReduceStep) -> str:
    """The one column of the template that is not a group key or the order: the text reduced.

    Raises:
        PlanError: the template names none or several such columns."""
    texts = [c for c in placeholders(step.template) if c not in step.keys() and c not in step.order_by]
    if len(texts) != 1:
        raise PlanError(f"reduce step {name!r}: the template must name exactly one text column besides the "
                        f"group keys, got {texts}")
    return texts[0]


def _ordinal(step: ReduceStep) -> Column:
    """Document order as one long: the ``order_by`` column, or the row's position. With several
    columns this is the first, until :func:`_ranked` replaces it by their rank."""
    if not step.order_by:
        return F.monotonically_increasing_id()
    return F.col(step.order_by[0]).cast("long")


def _ranked(leaves: DataFrame, step: ReduceStep) -> DataFrame:
    """With several ``order_by`` columns, each leaf's ``ordinal`` becomes the rank of their values,
    which the leaf table keeps as ``order_0``, ``order_1`` … (one window over every leaf, so that an
    incremental run ranks its new leaves among the kept ones as a full run would)."""
    if len(step.order_by) < 2:
        return leaves
    order = [F.col(f"order_{i}").asc_nulls_first() for i in range(len(step.order_by))]
    return leaves.withColumn("ordinal", (F.row_number().over(Window.orderBy(*order)) - 1).cast("long"))


def _leaves(df: DataFrame, name: str, step: ReduceStep, text: str, leaf: str, run: RunContext) -> DataFrame:
    """The input rows as leaf nodes (round 0), with the status and counts of the step that wrote ``text``."""
    job = run.job
    meta = run.input_meta(text)
    ordinal = _ordinal(step)
    keyed = INPUT_KEY in df.columns
    if step.leaf_id:
        ids = F.concat_ws("#", *[F.col(c).cast("string") for c in step.leaf_id])
    elif keyed:  # stable across runs, unlike an ordinal: the row's key and its place among the row's pieces
        order = [F.col(c).asc_nulls_first() for c in step.order_by] or [F.col(text).asc_nulls_first()]
        ids = F.concat_ws("#", F.col(INPUT_KEY), F.row_number().over(Window.partitionBy(INPUT_KEY).orderBy(*order)))
    else:
        ids = ordinal.cast("string")
    lineage = [F.col(INPUT_HASH).alias("__hash"), F.col(INPUT_KEY).alias("__key")] if keyed else \
        [F.lit(None).cast("string").alias("__hash"), F.lit(None).cast("string").alias("__key")]
    orders = [F.col(c).alias(f"order_{i}") for i, c in enumerate(step.order_by)] if len(step.order_by) > 1 else []
    framed = df.select(*step.keys(), F.col(text).cast("string").alias("__text"), ordinal.alias("ordinal"), ids.alias("__id"),
                       *lineage, *orders, *([F.col(meta).alias("__meta")] if meta in df.columns else []))
    blank = F.col("__text").isNull() | (F.trim(F.col("__text")) == "")
    if "__meta" in framed.columns:
        calls = {f.name: F.col(f"__meta.{f.name}") for f in CALL_FIELDS + PROVENANCE_FIELDS}
    else:
        calls = {"status": F.when(blank, "error").otherwise("ok"), "error_class": F.when(blank, "EmptyInput"),
                 "error": F.when(blank, "EmptyInput: the text is NULL or blank"), "llm_calls": F.lit(0),
                 "prompt_tokens": F.lit(0), "completion_tokens": F.lit(0), "cached_tokens": F.lit(0),
                 "from_cache": F.lit(False), "run_id": F.lit(job.run_id), "plan_id": F.lit(job.plan_id),
                 "step": F.lit(name), "model": F.lit(None), "endpoint_host": F.lit(None), "template_hash": F.lit(None)}
    schema = node_schema(StructType([df.schema[k] for k in step.keys()]), step.output)
    values = {**calls, "level": F.lit(leaf), "round": F.lit(0), "node_id": F.concat(F.lit(f"{leaf}:"), "__id"),
              "children": F.array("__id"), "content_hash": F.col("__hash"), "input_key": F.col("__key"),
              step.output: F.col("__text"), f"{step.output}_tokens": F.lit(None),
              "failed_inputs": F.when(calls["status"] == "error", 1).otherwise(0)}
    values["ordinal"] = F.col("ordinal")
    return framed.select(*step.keys(), *[values[f.name].cast(f.dataType).alias(f.name)
                                         for f in schema.fields[len(step.keys()):]],
                         *[c for c in framed.columns if c.startswith("order_")])


def _reduce_partition_fn(step: ReduceStep, level: Level, keys: list[str], text: str, round_no: int, job: JobContext):
    """The pandas function of one round of ``level`` over a partition: the nodes of its groups ──►
    their parent nodes, every group of the partition through one :func:`reduce_groups` call. Rows
    of the partition that are this round's own nodes (its level and round) are the last run's: a
    parent whose id and ``content_hash`` they hold is kept as it was, without a call
    (:mod:`apwa_spark.incremental`)."""
    prompt = level.prompt or step.prompt
    template = prompt.template() if prompt else agents.MAP_TEMPLATE
    tidy = bool(prompt and prompt.tidy)
    hashed = template_hash(step.template + (prompt.model_dump_json() if prompt else ""))
    salt = f"{hashed}|{step.max_tokens}|{job.settings.llm.model}"
    out, out_tokens = step.output, f"{step.output}_tokens"

    def reduce_partition(batches):
        frames = [b for b in batches if len(b)]
        if not frames:
            return
        part = pd.concat(frames, ignore_index=True)
        last_run = (part["level"] == level.name) & (part["round"] == round_no)
        kept = {r["node_id"]: r for r in part[last_run].to_dict("records") if _keepable(r)}
        part = part[~last_run]
        parts = [g for _, g in part.groupby(level.group_by, dropna=False, sort=False)] if level.group_by else [part]
        groups = [g.sort_values("ordinal", kind="stable", na_position="first").reset_index(drop=True) for g in parts]
        client = job.client()
        children = _children(groups, out, out_tokens, client)
        fields = [{k: g[k].iloc[0] for k in level.group_by} for g in groups]
        bases = [f"{level.name}:{'/'.join(str(f[k]) for k in level.group_by) or 'all'}:r{round_no}" for f in fields]

        def held(g: int, n: int, count: int, members: list[int]) -> dict | None:
            """The last run's row of this parent, when its id and content hash are unchanged."""
            row = kept.get(parent_id(bases[g], n, count))
            digest = node_hash(salt, _lineage(groups[g], members))
            return row if row is not None and row["content_hash"] == digest else None

        def known(g: int, n: int, count: int, members: list[int]) -> Completion | None:
            row = held(g, n, count, members)
            return Completion(text=row[out], status=row["status"]) if row is not None else None

        def call(batches: list[list[str]], owners: list[int]) -> list[Completion]:
            prompts = [step.template.format_map({**fields[o], text: numbered(b)}) for b, o in zip(batches, owners)]
            return [dataclasses.replace(r.completion, text=r.value)
                    for r in agents.map_rows(prompts, step.max_tokens, job.settings, client, template, tidy)]

        rows = []
        for g, (group, parents) in enumerate(zip(groups, reduce_groups(children, step.token_budget, call, True, known))):
            for n, p in enumerate(parents):
                node_id = parent_id(bases[g], n, len(parents))
                rows.append(held(g, n, len(parents), p.children) or _node(
                    group, p.children, p.completion, p.failed_inputs, keys, level, round_no, node_id, hashed,
                    node_hash(salt, _lineage(group, p.children)), out, job))
        yield pd.DataFrame(rows, columns=list(part.columns))

    return reduce_partition


def _keepable(row: dict) -> bool:
    """A node an incremental run may keep: it has an answer, or is an error that needed no call
    (all its children failed); not a failed call or one left unevaluated, which a re-run retries."""
    return row["status"] in USABLE or row["error_class"] == "ChildrenFailed"


def _lineage(group: pd.DataFrame, members: list[int]) -> list[tuple[str, str | None, str | None]]:
    """``(node_id, content_hash, status)`` of a parent's children, in document order (:func:`node_hash`)."""
    rows = group.iloc[members]
    return list(zip(rows["node_id"], rows["content_hash"], rows["status"]))


def _children(groups: list[pd.DataFrame], out: str, out_tokens: str, client) -> list[list[Child]]:
    """Each group's nodes as the engine's children; texts whose tokens are not known yet are counted
    by the endpoint's own tokenizer, all of the partition's in one ``count_tokens`` call."""
    texts = [[t if isinstance(t, str) else None for t in g[out]] for g in groups]
    tokens = [[None if pd.isna(n) else int(n) for n in g[out_tokens]] for g in groups]
    unknown = [(a, b) for a, row in enumerate(texts) for b, t in enumerate(row) if tokens[a][b] is None and t and t.strip()]
    for (a, b), n in zip(unknown, client.count_tokens([texts[a][b] for a, b in unknown]) if unknown else []):
        tokens[a][b] = n
    return [[Child(t, s, n or 0, int(f or 0), e) for t, s, n, f, e in zip(ts, g["status"], ns, g["failed_inputs"], g["error"])]
            for g, ts, ns in zip(groups, texts, tokens)]


def _node(group: pd.DataFrame, members: list[int], c: Completion, failed_inputs: int, keys: list[str], level: Level,
          round_no: int, node_id: str, hashed: str, content_hash: str, out: str, job: JobContext) -> dict:
    """One parent node's row (:func:`node_schema`)."""
    first = group.iloc[members[0]]
    ordinals = group["ordinal"].iloc[members].dropna()
    usable = c.status in USABLE
    return {**{k: first[k] if k in level.group_by else None for k in keys},
            "level": level.name, "round": round_no, "node_id": node_id,
            "ordinal": int(ordinals.min()) if len(ordinals) else None, "children": group["node_id"].iloc[members].tolist(),
            "content_hash": content_hash, "input_key": None,
            "run_id": job.run_id, "plan_id": job.plan_id, "step": f"{level.name}_r{round_no}",
            "model": job.settings.llm.model, "endpoint_host": job.endpoint_host, "template_hash": hashed,
            out: c.text if usable else None, f"{out}_tokens": c.text_tokens if usable else 0,
            **call_fields(c), "failed_inputs": failed_inputs}


def estimate_reduce(step: ReduceStep, stats: InputStats) -> Estimate:
    """Per level, the engine's own packing (:func:`~apwa_spark.hierarchy.pack_children`) simulated
    round by round until one row per group: a batch of two or more children is one call, a batch of
    one passes up free. Children's sizes: the leaves' average tokens (their text's characters at
    :data:`CHARS_PER_TOKEN` characters a token), then ``max_tokens`` per answer (an upper bound).

    Group sizes are measured where the estimate ran the steps before (``stats.frame``: leaves per
    group at the first level, groups of the level below per group above it); else each level's
    groups are taken from a step before (``stats.groups``, e.g. ``read_plays``) and assumed of equal
    size, or, unknown, one row each for a keyed level and one group for the whole table."""
    chars = sum(stats.chars.get(c, 0) for c in placeholders(step.template) if c not in step.keys())
    leaf_tokens = chars / CHARS_PER_TOKEN / max(stats.rows, 1)
    levels = step.levels or [Level(name="reduce", group_by=step.group_by)]
    sizes = _measured_sizes(stats.frame, levels) if stats.frame is not None else _assumed_sizes(stats, levels)
    calls = prompt = 0
    tokens = leaf_tokens
    for level_sizes in sizes:
        level_calls, level_prompt = _simulate(level_sizes, tokens, step.token_budget, step.max_tokens)
        calls, prompt = calls + level_calls, prompt + level_prompt + level_calls * len(step.template) // int(CHARS_PER_TOKEN)
        tokens = step.max_tokens
    nodes = len(sizes[-1]) if sizes else 0
    guessed = [lv.name for lv in levels if lv.group_by and tuple(lv.group_by) not in stats.groups]
    basis = ("group sizes measured" if stats.frame is not None
             else "groups of equal size" + (f"; groups of {', '.join(guessed)} unknown: assumed one row each" if guessed else ""))
    return Estimate(calls, prompt, calls * step.max_tokens, rows_out=nodes,
                    chars_out={step.output: int(nodes * step.max_tokens * CHARS_PER_TOKEN)},
                    assumption=f"{CHARS_PER_TOKEN:g} characters per token; answers of max_tokens; {basis}")


def _simulate(sizes: list[int], child_tokens: float, budget: int, answer_tokens: int) -> tuple[int, int]:
    """(calls, prompt tokens) of one level: each group of ``sizes[i]`` children packed round after
    round as the engine packs them, children of ``child_tokens`` tokens, answers of ``answer_tokens``."""
    calls = prompt = 0
    for n in sizes:
        tokens = child_tokens
        for _ in range(MAX_ROUNDS):
            if n <= 1:
                break
            batches = pack_children([int(tokens)] * n, budget)
            called = [b for b in batches if len(b) > 1]
            calls += len(called)
            prompt += int(sum(len(b) for b in called) * (tokens + 2))
            n, tokens = len(batches), answer_tokens
    return calls, prompt


def _measured_sizes(frame: DataFrame, levels: list[Level]) -> list[list[int]]:
    """Children per group, level by level: the rows of each first-level group, then, for each higher
    level, how many groups of the level below each of its groups holds (one Spark aggregate each)."""
    sizes, below = [], None
    for level in levels:
        rows = frame.select(*(below or [])).distinct() if below is not None else frame
        counts = rows.groupBy(*level.group_by).count() if level.group_by else rows.groupBy().count()
        sizes.append([r["count"] for r in counts.collect()])
        below = level.group_by
    return sizes


def _assumed_sizes(stats: InputStats, levels: list[Level]) -> list[list[int]]:
    """Children per group, level by level, from the group counts a step before knows (equal sizes)."""
    sizes, nodes = [], max(stats.rows, 1)
    for level in levels:
        key = tuple(level.group_by)
        groups = min(nodes, stats.groups.get(key, 1 if not key else nodes))
        sizes.append([round(nodes / groups)] * groups)
        nodes = groups
    return sizes


def named_keys(ctx: PlanningContext) -> list[str]:
    """The key columns the clause names (``… of each act``, ``… of each label``)."""
    return [c for c in ctx.named_columns() if c in ctx.key_columns and c != ctx.text_column]


def field_schema(ctx: PlanningContext) -> dict | None:
    """The group key, when the clause names none of the key columns; None: the named one decides."""
    if named_keys(ctx):
        return None
    keys = [k for k in ctx.key_columns if k != ctx.text_column]
    props = {"group_by": {"type": "string", "enum": keys + ["none"]}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_reduce(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    named = named_keys(ctx)
    if named:
        ctx.decide("group_by", "rule:named-key-column")
    key = named[0] if named else fields.get("group_by", "none")
    return {"kind": "reduce", "template": f"{ctx.query}\n\nTexts:\n{{{ctx.text_column}}}",
            "group_by": [] if key in ("none", ctx.text_column) else [key], "output": fields.get("output") or "summary"}


KIND = StepKind(
    config=ReduceStep, compile=compile_reduce, estimate=estimate_reduce,
    planner=PlannerSpec(
        actions=("summarize all", "combine", "merge"),
        examples=(("Summarize all texts of each author into one summary.", "summarize all"),),
        field_examples=(("Summarize all texts of each author into one summary.", {"group_by": "author"}),
                        ("Summarize the whole table into one summary.", {"group_by": "none"})),
        field_schema=field_schema, build=build_reduce, rank=7,
        description="combine the texts of each group (or of the whole table) into one summary"),
)
