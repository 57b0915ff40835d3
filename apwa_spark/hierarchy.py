"""The hierarchical reduce engine: one group's children ──► its parents, round after round.

One engine serves the summarize job's levels (scene ──► act ──► play ──► corpus), the plan's
``reduce`` step and the SQL functions ``apwa_summarize_agg`` / ``apwa_summarize_texts``. Each caller
keeps its own row layout and its own prompt; what they share lives here:

* **packing** (:func:`pack_children`): a group's children, in document order, go into consecutive
  batches whose token sum (counted by the endpoint's tokenizer) stays under a budget, at least two
  children a batch so that every round shrinks the group;
* **rounds**: a level repeats until each group has one row, at most :data:`MAX_ROUNDS` times
  (:func:`run_rounds`; on Spark each round is one Delta table);
* **the failure policy** (:func:`reduce_groups`), the same everywhere:

  - a child whose status is ``error`` (or whose text is NULL or blank) is not summarized; it stays
    in the lineage of the group's first parent;
  - a parent built from children of which some failed, or from a ``partial`` child, has status
    ``partial``, error class ``ChildrenFailed``, and counts the failed inputs below it
    (:attr:`Parent.failed_inputs`); its summary covers the others. It is never built silently from
    empty text;
  - a group whose children all failed gives one ``error`` parent (``ChildrenFailed``) that keeps
    the whole lineage, without an LLM call;
  - a batch of one child passes it up without an LLM call;
  - a group with a child the job's budget left ``unevaluated`` gives one ``unevaluated`` parent
    without an LLM call: its summary is left for the re-run that evaluates the child, instead of
    paying for a partial one now.

The method follows APWA's multi-round hierarchical summarization (SummaryBench: scene ──► act ──►
whole work).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

from apwa_spark.llm.client import Completion

#: At most this many rounds per level; a level still not down to one row per group is an error.
MAX_ROUNDS = 20
OK, PARTIAL, ERROR, UNEVALUATED = "ok", "partial", "error", "unevaluated"
#: Statuses whose text a parent may summarize.
USABLE = (OK, PARTIAL)


@dataclass(frozen=True)
class Child:
    """One child of a group, in document order.

    Attributes:
        text: its summary (or, at the first level, its input text); NULL or blank is not usable.
        status: ``ok``, ``partial``, ``error`` or ``unevaluated``.
        tokens: its text's tokens (the endpoint's tokenizer); used for packing.
        failed_inputs: failed inputs below it that its text does not cover (0 for an ``ok`` child;
            an ``error`` child counts at least itself).
        error: the ``ErrorClass: message`` of an ``error`` or ``partial`` child, passed up with it.
    """

    text: str | None
    status: str
    tokens: int = 0
    failed_inputs: int = 0
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.status in USABLE and bool(self.text and self.text.strip())

    @property
    def missing(self) -> int:
        """Inputs this child leaves out of a parent: its own failed inputs, or itself when unusable."""
        return self.failed_inputs if self.usable else max(1, self.failed_inputs)


@dataclass(frozen=True)
class Parent:
    """One parent row of a round.

    Attributes:
        children: indices into the group's children (document order), failed ones included.
        completion: the summary; ``status`` already set by the failure policy (``ok``, ``partial``,
            ``error``), with the call's counts (0 calls for a pass-through or an all-failed group).
        failed_inputs: failed inputs below this parent that its summary does not cover.
    """

    children: list[int]
    completion: Completion
    failed_inputs: int = 0


#: ``known(group, n, parents, members)`` ──► an answer already held, or None (:func:`reduce_groups`).
Known = Callable[[int, int, int, list[int]], "Completion | None"]


def pack_children(tokens: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of consecutive children ──► batches whose token sum stays within ``budget`` tokens
    (each child counts 2 more, for its ``N. `` numbering and newline).

    Every batch of a group with two or more children has at least two, so each round shrinks the group.
    """
    batches: list[list[int]] = []
    current, used = [], 0
    for i, n in enumerate(tokens):
        if len(current) >= 2 and used + n > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n + 2
    if current:
        if len(current) == 1 and batches:
            batches[-1].append(current[0])
        else:
            batches.append(current)
    return batches


def reduce_groups(groups: Sequence[Sequence[Child]], budget: int, call: Callable[..., list[Completion]],
                  keyed: bool = False, known: Known | None = None) -> list[list[Parent]]:
    """One round over several groups: each group's children (document order) ──► its parents
    (document order). The batches of every group go to the endpoint together, in one ``call``, so
    a partition's groups keep the endpoint's slots busy.

    Args:
        groups: each group's children.
        budget: tokens per batch (:func:`pack_children`).
        call: the reduce agent: batches of child texts (each of two or more, document order) ──► one
            :class:`Completion` per batch, in order; with ``keyed``, ``call(batches, owners)`` also
            gets each batch's group index (for a prompt that names the group's keys). Not called
            when no batch needs a call.
        known: ``known(group, n, parents, members)``: the answer an earlier run already holds
            for the group's parent ``n`` of ``parents``, built from the children ``members``
            (indices, failed ones included), or None; a known answer costs no call (incremental
            runs, :mod:`apwa_spark.incremental`).

    Returns:
        each group's parents, under the failure policy of this module's docstring.
    """
    packed = [[] if _waits(children) else _pack_group(children, budget) for children in groups]
    held = [[known(g, n, len(batches), _members(children, batches, n)) if known else None for n in range(len(batches))]
            for g, (children, batches) in enumerate(zip(groups, packed))]
    calls = [(g, [children[i].text for i in b]) for g, (children, batches) in enumerate(zip(groups, packed))
             for b, h in zip(batches, held[g]) if len(b) > 1 and h is None]
    texts, owners = [t for _, t in calls], [g for g, _ in calls]
    answers = iter((call(texts, owners) if keyed else call(texts)) if texts else [])
    return [_parents(children, batches, answers, h) for children, batches, h in zip(groups, packed, held)]



def _members(children: Sequence[Child], batches: list[list[int]], n: int) -> list[int]:
    """The children of parent ``n``: its batch, and for the first parent the failed children too
    (they stay in its lineage)."""
    failed = [i for i, c in enumerate(children) if not c.usable]
    return sorted(batches[n] + failed) if n == 0 else batches[n]


def _pack_group(children: Sequence[Child], budget: int) -> list[list[int]]:
    """Batches of the usable children's indices; [] when none is usable."""
    usable = [i for i, c in enumerate(children) if c.usable]
    return [[usable[j] for j in b] for b in pack_children([children[i].tokens for i in usable], budget)]


def _waits(children: Sequence[Child]) -> bool:
    """Some child was left unevaluated by the job's budget."""
    return any(c.status == UNEVALUATED for c in children)


def _parents(children: Sequence[Child], batches: list[list[int]], answers, held: list[Completion | None]) -> list[Parent]:
    if _waits(children):
        waiting = sum(c.status == UNEVALUATED for c in children)
        left = Completion(text=None, status=UNEVALUATED, error=(
            f"BudgetExhausted: {waiting} of its {len(children)} children were left unevaluated by the job's budget; "
            "no LLM call made"))
        return [Parent(list(range(len(children))), left, sum(c.missing for c in children if c.status != UNEVALUATED))]
    if not batches:
        first = next((c.error for c in children if c.error), None)
        error = Completion.failed(f"ChildrenFailed: all {len(children)} children failed; no LLM call made"
                                  + (f" (first: {first})" if first else ""))
        return [Parent(list(range(len(children))), error, sum(c.missing for c in children))]
    parents = []
    for n, batch in enumerate(batches):
        members = _members(children, batches, n)
        completion = held[n] or (next(answers) if len(batch) > 1 else _passthrough(children[batch[0]]))
        missing = sum(children[i].missing for i in members)
        parents.append(Parent(members, _with_policy(completion, missing, len(members)), missing))
    return parents


def _passthrough(child: Child) -> Completion:
    """A batch's single usable child, carried up without an LLM call."""
    return Completion(text=child.text, status=child.status, error=child.error, text_tokens=child.tokens)


def _with_policy(completion: Completion, missing: int, children: int) -> Completion:
    """An ``ok`` answer over children with failed inputs below them becomes ``partial``."""
    if completion.status != OK or not missing:
        return completion
    return dataclasses.replace(completion, status=PARTIAL, error=(
        f"ChildrenFailed: {missing} failed input(s) below this node's {children} children are not in its summary"))


def reduce_to_root(groups: Sequence[Sequence[Child]], budget: int,
                   call: Callable[[list[list[str]]], list[Completion]]) -> list[tuple[Completion, list[Completion]]]:
    """Rounds of :func:`reduce_groups` over in-memory groups, all advancing together, until each
    group has one parent.

    Returns:
        per group: (the root's completion, every completion its rounds produced, for counting calls
        and tokens). An empty group is an ``EmptyInput`` error; a group above one parent after
        :data:`MAX_ROUNDS` rounds is a ``ReduceDidNotConverge`` error.
    """
    levels = [list(g) for g in groups]
    spent: list[list[Completion]] = [[] for _ in groups]
    roots: list[Completion | None] = [None] * len(groups)
    for _ in range(MAX_ROUNDS):
        live = [i for i, level in enumerate(levels) if level and roots[i] is None]
        if not live:
            break
        for i, parents in zip(live, reduce_groups([levels[i] for i in live], budget, call)):
            spent[i] += [p.completion for p in parents]
            levels[i] = [Child(p.completion.text, p.completion.status, p.completion.text_tokens, p.failed_inputs,
                               p.completion.error) for p in parents]
            if len(parents) == 1:
                roots[i] = parents[0].completion
    out = []
    for level, root, calls in zip(levels, roots, spent):
        if not level:
            root = Completion.failed("EmptyInput: no non-blank text to summarize; no LLM call made")
        elif root is None:
            root = Completion.failed(f"ReduceDidNotConverge: {len(level)} summaries left after {MAX_ROUNDS} rounds")
        out.append((root, calls))
    return out


def run_rounds(write_round: Callable[[int], str], groups_left: Callable[[str], bool], what: str) -> list[str]:
    """A level's rounds on Spark: ``write_round(k)`` writes round ``k`` (one Delta table) and returns
    its name; rounds go on while ``groups_left(table)`` (some group still has more than one row).

    Returns:
        the tables written, in order.

    Raises:
        ReduceDidNotConverge: still more than one row in some group after :data:`MAX_ROUNDS` rounds.
    """
    tables = []
    for round_no in range(1, MAX_ROUNDS + 1):
        tables.append(write_round(round_no))
        if not groups_left(tables[-1]):
            return tables
    raise ReduceDidNotConverge(f"{what}: some group still has more than one row after {MAX_ROUNDS} rounds")


class ReduceDidNotConverge(RuntimeError):
    """A level did not come down to one row per group within :data:`MAX_ROUNDS` rounds."""
