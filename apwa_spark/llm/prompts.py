"""Prompt styles: one subtask, rendered for a base model or for an instruct model.

A :class:`Task` is what an executor agent wants done: an instruction, a few worked examples and the
row's own input. A prompt style turns it into the request body:

* ``completion`` (base models such as the embedded Gemma 3 270M, which has no chat template and
  follows chat instructions poorly): one few-shot text for ``/v1/completions``, with
  ``Input:/Output:`` style pairs and stop sequences. ARCHITECTURE.md records the probes that chose it.
* ``chat`` (instruct models: vLLM, OpenAI): system + user/assistant example turns for
  ``/v1/chat/completions``.

Both put the shared part (instruction, examples) first and byte-identical across rows, and the row's
text last, so an endpoint's prefix cache pays for the shared part once (llama.cpp reuses a matching
prompt prefix; OpenAI caches prefixes of 1,024 tokens and more).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

PromptStyle = Literal["completion", "chat"]


@dataclass(frozen=True)
class Template:
    """The shared, row-independent part of a subtask.

    Attributes:
        instruction: what to do, in one or two sentences.
        examples: (input, output) pairs shown before the row's input.
        input_label / output_label: the labels of the completion-style pairs, e.g. Text / Summary.
    """

    instruction: str
    examples: tuple[tuple[str, str], ...] = ()
    input_label: str = "Input"
    output_label: str = "Output"

    def hash(self, style: PromptStyle) -> str:
        """sha256 (first 16 hex digits) of the template and the style that renders it."""
        payload = json.dumps([style, self.instruction, self.examples, self.input_label, self.output_label])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """One LLM call an executor agent wants: a template applied to one input.

    Attributes:
        template: the shared instruction and examples.
        input: the row's text (already expanded from its placeholders).
        max_tokens: completion cap, tokens.
        json_schema: when set, the completion must be a JSON value matching it.
    """

    template: Template
    input: str
    max_tokens: int
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)


def render_completion(task: Task) -> tuple[str, list[str]]:
    """Few-shot completion prompt and its stop sequences (``completion`` style)."""
    t = task.template
    parts = [t.instruction.strip(), ""]
    for example_in, example_out in t.examples:
        parts += [f"{t.input_label}: {example_in.strip()}", f"{t.output_label}: {example_out.strip()}", ""]
    parts += [f"{t.input_label}: {task.input.strip()}", f"{t.output_label}:"]
    return "\n".join(parts), ["\n\n", f"\n{t.input_label}:"]


def render_chat(task: Task) -> list[dict[str, str]]:
    """Chat messages (``chat`` style): system instruction, example turns, the row's input."""
    t = task.template
    messages = [{"role": "system", "content": t.instruction.strip()}]
    for example_in, example_out in t.examples:
        messages += [{"role": "user", "content": example_in.strip()}, {"role": "assistant", "content": example_out.strip()}]
    messages.append({"role": "user", "content": task.input.strip()})
    return messages


def cache_key(task: Task, style: PromptStyle, model: str) -> str:
    """Identity of a call: identical keys in one batch are sent once."""
    rendered = render_completion(task) if style == "completion" else render_chat(task)
    payload = json.dumps([model, style, rendered, task.max_tokens, task.json_schema], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
