"""Executor agents (APWA's *workers*): plain functions over a batch of rows, testable without Spark.

An agent expands its subtask template for each row, calls the LLM through
:class:`~apwa_spark.llm.client.LLMClient`, and returns one :class:`Completion` per row, ``ok`` or
``error``; it never raises for a bad row. The pandas UDFs in :mod:`apwa_spark.summarize` are thin
shells around these functions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from apwa_spark.config import Settings
from apwa_spark.hierarchy import Child, reduce_to_root
from apwa_spark.llm.client import Completion, LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.tools import chunk_texts

_CHAT_EXAMPLE = (
    "(Thunder and lightning. Enter three Witches)\nFirst Witch: When shall we three meet again In thunder, "
    "lightning, or in rain?\nSecond Witch: When the hurlyburly's done, When the battle's lost and won.\n"
    "Third Witch: That will be ere the set of sun.\nFirst Witch: Where the place?\nSecond Witch: Upon the "
    "heath.\nThird Witch: There to meet with Macbeth.",
    "Three witches meet in a storm and agree to meet Macbeth on the heath once the battle is over.",
)

#: Level 0: one chunk of a scene's dialogue ──► a short summary. The completion cue was chosen by
#: the prompt probe in benchmarks/results/prompt_probe.md (few-shot pairs were copied verbatim).
SCENE_TEMPLATE = Template(
    instruction="Here is a part of a play.",
    cue="Summary of the part above: In this part,",
    answer_prefix="In this part,",
    examples=(_CHAT_EXAMPLE,),
)

#: Levels 1+: consecutive summaries (children in document order) ──► one summary, one template per level.
REDUCE_TEMPLATES = {
    level: Template(
        instruction=f"Here are summaries of consecutive parts of {what}, in order.",
        cue=f"Summary of the whole {noun} above: In this {noun},",
        answer_prefix=f"In this {noun},",
    )
    for level, what, noun in (("scene", "a scene", "scene"), ("act", "an act of a play", "act"),
                              ("play", "a play", "play"), ("corpus", "a collection of plays", "collection"),
                              ("text", "a text", "text"))
}

#: Level 0 of any text (the SQL functions ``apwa_summarize`` and ``apwa_summarize_agg``).
TEXT_TEMPLATE = Template(
    instruction="Here is a part of a text.",
    cue="Summary of the part above: In this part,",
    answer_prefix="In this part,",
)


def summarize_texts(texts: Sequence[str | None], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Level-0 agent: each text (a scene chunk) ──► a summary ``Completion``, in order (whitespace
    collapsed to single spaces, repeated sentences dropped).

    Null or blank texts get ``status='error'`` (``EmptyInput``) without an LLM call.
    """
    client = client or LLMClient(settings)
    tasks = [Task(SCENE_TEMPLATE, text or "", settings.summarize.max_tokens) for text in texts]
    return [_tidy(c) for c in client.complete(tasks)]


def reduce_summaries(level: str, groups: Sequence[Sequence[str]], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Reduce agent for ``level`` (scene, act, play, corpus, text): each group of child summaries (document order)
    ──► one summary ``Completion``."""
    client = client or LLMClient(settings)
    tasks = [
        Task(REDUCE_TEMPLATES[level], "\n".join(f"{i}. {s.strip()}" for i, s in enumerate(group, 1)), settings.summarize.max_tokens)
        for group in groups
    ]
    return [_tidy(c) for c in client.complete(tasks)]


def summarize_documents(documents: Sequence[Sequence[str | None]], settings: Settings,
                        client: LLMClient | None = None) -> list[Completion]:
    """Hierarchical summary of each document (a list of texts in order: a long text, or a group's rows).

    The same method as the summarize job, in memory, through the same engine
    (:mod:`apwa_spark.hierarchy`): each text is cut into chunks of at most ``summarize.chunkTokens``
    tokens (the endpoint's tokenizer), each chunk is summarized, then consecutive summaries are
    packed under ``summarize.reduceTokens`` tokens and reduced, round after round, until one is
    left. All documents advance round by round together, so one batch of requests per round keeps
    the endpoint's slots busy.

    Returns:
        one :class:`Completion` per document: the summary, with calls and tokens summed over every
        call it took. Null and blank texts are skipped (as SQL aggregates skip NULL); a document
        with no text left is an ``EmptyInput`` error. Failed chunk calls follow the engine's failure
        policy: the summary covers the rest and its status is ``partial`` (``ChildrenFailed``, with
        the count); when every chunk failed, the document is an ``error``.
    """
    client = client or LLMClient(settings)
    budget = settings.summarize
    texts = [[t for t in doc if t and t.strip()] for doc in documents]
    chunked = iter(chunk_texts([t for doc in texts for t in doc], budget.chunk_tokens, client.count_tokens))
    pieces = [[chunk for _text in doc for chunk, _tokens in next(chunked)] for doc in texts]
    flat = [c for doc in pieces for c in doc]
    answers = iter(_tidy(c) for c in client.complete([Task(TEXT_TEMPLATE, c, budget.max_tokens) for c in flat]))
    leaves = [[next(answers) for _ in doc] for doc in pieces]
    groups = [[Child(c.text, c.status, c.text_tokens or len(c.text or "") // 3 + 1, 0, c.error) for c in doc] for doc in leaves]
    roots = reduce_to_root(groups, budget.reduce_tokens, lambda texts: reduce_summaries("text", texts, settings, client))
    return [_document_result(root, doc + spent) for (root, spent), doc in zip(roots, leaves)]


def _document_result(root: Completion, spent: list[Completion]) -> Completion:
    """The root, with calls and tokens summed over every completion the document took."""
    return dataclasses.replace(
        root, calls=sum(c.calls for c in spent), prompt_tokens=sum(c.prompt_tokens for c in spent),
        completion_tokens=sum(c.completion_tokens for c in spent), cached_tokens=sum(c.cached_tokens for c in spent))


def drop_repeated_sentences(text: str) -> str:
    """Remove sentences that repeat an earlier one verbatim, and a trailing unfinished sentence when a
    finished one precedes it. Small base models loop ("He is sick. He is sick. ...") until the token cap."""
    text = " ".join(text.split())
    sentences = re.findall(r"[^.!?]+[.!?]+[\"')]*|[^.!?]+$", text)
    kept, seen = [], set()
    for sentence in sentences:
        key = sentence.strip().lower()
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
    if len(kept) > 1 and not re.search(r"[.!?][\"')]*\s*$", kept[-1]):
        kept.pop()
    return "".join(kept).strip()


def _tidy(completion: Completion) -> Completion:
    if completion.status != "ok" or not completion.text:
        return completion
    return dataclasses.replace(completion, text=drop_repeated_sentences(completion.text))
