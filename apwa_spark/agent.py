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
from apwa_spark.llm.client import Completion, LLMClient
from apwa_spark.llm.prompts import Task, Template

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
        cue=f"Summary of the whole {level} above: In this {level},",
        answer_prefix=f"In this {level},",
    )
    for level, what in (("scene", "a scene"), ("act", "an act of a play"), ("play", "a play"))
}


def summarize_texts(texts: Sequence[str | None], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Level-0 agent: each text (a scene chunk) ──► a summary ``Completion``, in order (whitespace
    collapsed to single spaces, repeated sentences dropped).

    Null or blank texts get ``status='error'`` (``EmptyInput``) without an LLM call.
    """
    client = client or LLMClient(settings)
    tasks = [Task(SCENE_TEMPLATE, text or "", settings.summarize.max_tokens) for text in texts]
    return [_tidy(c) for c in client.complete(tasks)]


def reduce_summaries(level: str, groups: Sequence[Sequence[str]], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Reduce agent for ``level`` (scene, act, play): each group of child summaries (document order)
    ──► one summary ``Completion``."""
    client = client or LLMClient(settings)
    tasks = [
        Task(REDUCE_TEMPLATES[level], "\n".join(f"{i}. {s.strip()}" for i, s in enumerate(group, 1)), settings.summarize.max_tokens)
        for group in groups
    ]
    return [_tidy(c) for c in client.complete(tasks)]


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
