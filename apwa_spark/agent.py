"""Executor agents (APWA's *workers*): plain functions over a batch of rows, testable without Spark.

An agent expands its subtask template for each row, calls the LLM through
:class:`~apwa_spark.llm.client.LLMClient`, and returns one :class:`Completion` per row, ``ok`` or
``error``; it never raises for a bad row. The pandas UDFs in :mod:`apwa_spark.summarize` are thin
shells around these functions.
"""

from __future__ import annotations

from typing import Sequence

from apwa_spark.config import Settings
from apwa_spark.llm.client import Completion, LLMClient
from apwa_spark.llm.prompts import Task, Template

#: Level 0: one chunk of a scene's dialogue ──► a short summary. The example is from a play that is
#: not summarized in tests (Macbeth I.1) so the model's habit of copying names has less to copy.
SCENE_TEMPLATE = Template(
    instruction=(
        "Summarize the part of a play below in two plain sentences: who is on stage and what happens. "
        "Use the characters' names."
    ),
    examples=(
        (
            "(Thunder and lightning. Enter three Witches)\nFirst Witch: When shall we three meet again "
            "In thunder, lightning, or in rain?\nSecond Witch: When the hurlyburly's done, When the "
            "battle's lost and won.\nThird Witch: That will be ere the set of sun.\nFirst Witch: Where "
            "the place?\nSecond Witch: Upon the heath.\nThird Witch: There to meet with Macbeth.",
            "Three witches meet in a storm. They agree to meet Macbeth on the heath once the battle is over.",
        ),
    ),
    input_label="Text",
    output_label="Summary",
)

#: Levels 1+: consecutive summaries (children in document order) ──► one summary.
REDUCE_TEMPLATE = Template(
    instruction=(
        "The numbered lines below summarize consecutive parts of a play, in order. "
        "Write one short paragraph that tells what happens across all of them, in order."
    ),
    examples=(
        (
            "1. Three witches meet in a storm and plan to meet Macbeth.\n2. Macbeth wins a battle and the "
            "witches hail him as future king.\n3. Lady Macbeth reads his letter and resolves that he will "
            "kill King Duncan.",
            "After a battle, three witches tell Macbeth he will be king, and Lady Macbeth resolves that "
            "he must murder King Duncan to make it so.",
        ),
    ),
    input_label="Parts",
    output_label="Summary",
)


def summarize_texts(texts: Sequence[str | None], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Level-0 agent: each text (a scene chunk) ──► a summary ``Completion``, in order.

    Null or blank texts get ``status='error'`` (``EmptyInput``) without an LLM call.
    """
    client = client or LLMClient(settings)
    tasks = [Task(SCENE_TEMPLATE, text or "", settings.summarize.max_tokens) for text in texts]
    return client.complete(tasks)


def reduce_summaries(groups: Sequence[Sequence[str]], settings: Settings, client: LLMClient | None = None) -> list[Completion]:
    """Reduce agent: each group of child summaries (document order) ──► one summary ``Completion``."""
    client = client or LLMClient(settings)
    tasks = [
        Task(REDUCE_TEMPLATE, "\n".join(f"{i}. {s.strip()}" for i, s in enumerate(group, 1)), settings.summarize.max_tokens)
        for group in groups
    ]
    return client.complete(tasks)
