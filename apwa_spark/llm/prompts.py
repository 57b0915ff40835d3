"""Prompt styles: one subtask, rendered for a base model or for an instruct model.

A :class:`Task` is what an executor agent wants done: an instruction, a few worked examples and the
row's own input. A prompt style turns it into the request body:

* ``completion`` (base models such as the embedded Gemma 3 270M, which has no chat template and
  follows chat instructions poorly): one text for ``/v1/completions``: instruction, the row's input,
  then a cue the model continues (``Summary of the scene above: In this scene,``), with a stop
  sequence. Few-shot pairs were tried and dropped: the 270M model copied the example answer.
* ``chat`` (instruct models: vLLM, OpenAI): system + user/assistant example turns for
  ``/v1/chat/completions``.

Both put the shared instruction (and chat examples) first and byte-identical across rows, so an
endpoint's prefix cache pays for it once (llama.cpp reuses a matching prompt prefix; OpenAI caches
prefixes of 1,024 tokens and more). The completion cue must follow the input; it is a dozen tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

PromptStyle = Literal["completion", "chat"]


@dataclass(frozen=True)
class Template:
    """The shared, row-independent part of a subtask.

    Attributes:
        instruction: what to do, in one or two sentences (chat: the system message; completion: the
            first line of the prompt).
        cue: completion style: the text after the row's input that the model continues, ending with
            ``answer_prefix``, e.g. ``"Summary of the scene above: In this scene,"``.
        answer_prefix: the start of the answer that the cue already says; it is prepended to the
            completion so the result reads as a whole sentence.
        examples: chat style: (input, output) example turns. Completion style shows none: the small
            base model copied few-shot answers verbatim in the probes (benchmarks/results/prompt_probe.md).
    """

    instruction: str
    cue: str = "Answer:"
    answer_prefix: str = ""
    examples: tuple[tuple[str, str], ...] = ()

    def hash(self, style: PromptStyle) -> str:
        """sha256 (first 16 hex digits) of the template and the style that renders it."""
        payload = json.dumps([style, self.instruction, self.cue, self.answer_prefix, self.examples])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """One LLM call an executor agent wants: a template applied to one input.

    Attributes:
        template: the shared instruction and examples.
        input: the row's text (already expanded from its placeholders).
        max_tokens: completion cap, tokens.
        json_schema: when set, the completion must be a JSON value matching it.
        cacheable: False keeps the call out of the response cache, read and write (the redact step's
            name calls: their prompts and answers hold PII).
    """

    template: Template
    input: str
    max_tokens: int
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    cacheable: bool = True


def clean_text(text: str) -> str:
    """Text safe to send: lone surrogates become U+FFFD, control characters (but tab and newline) a space."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROL.sub(" ", text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def render_completion(task: Task) -> tuple[str, list[str]]:
    """Completion prompt and stop sequences (``completion`` style): instruction, input, cue."""
    t = task.template
    return f"{t.instruction.strip()}\n\n{clean_text(task.input).strip()}\n\n{t.cue}", ["\n\n"]


def render_chat(task: Task) -> list[dict[str, str]]:
    """Chat messages (``chat`` style): system instruction, example turns, the row's input."""
    t = task.template
    messages = [{"role": "system", "content": t.instruction.strip()}]
    for example_in, example_out in t.examples:
        messages += [{"role": "user", "content": example_in.strip()}, {"role": "assistant", "content": example_out.strip()}]
    messages.append({"role": "user", "content": clean_text(task.input).strip()})
    return messages


def cache_key(task: Task, style: PromptStyle, model: str, params: dict[str, Any]) -> str:
    """Identity of a call: model, style, rendered prompt, generation parameters (``params`` plus the
    task's ``max_tokens``) and output schema. Identical keys in one batch are sent once; the
    response cache is keyed by it."""
    rendered = render_completion(task) if style == "completion" else render_chat(task)
    payload = json.dumps([model, style, rendered, task.max_tokens, params, task.json_schema], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
