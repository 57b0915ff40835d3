"""Which completion prompt suits the embedded base model: few-shot pairs, or an instruction + cue?

On 12 Romeo and Juliet scene chunks (first 1,500 characters of each scene), both styles summarize
with the same budget; the script counts, per style, the outputs that copy the few-shot example
(mention its witches or Macbeth), that name a speaker of the scene, and that repeat a sentence.
Writes results/prompt_probe.{json,md}.

    python benchmarks/prompt_probe.py [--base-url URL]
"""

from __future__ import annotations

import argparse
import re

from _common import endpoint_settings, machine, write_results

from apwa_spark import agent
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.plays import available_plays, parse_play

FEW_SHOT = Template(  # the few-shot style that was tried first; rendered as pairs before the row's input
    instruction=agent.SCENE_TEMPLATE.instruction + "\n\nText: " + agent.SCENE_TEMPLATE.examples[0][0]
    + "\nSummary: " + agent.SCENE_TEMPLATE.examples[0][1],
    cue="Summary:",
)
LONG_INSTRUCTION = Template(  # a fuller instruction before the text; the model echoed it back
    instruction="Read this part of a play. Then summarize it in two plain sentences: who is on stage and what happens.",
    cue=agent.SCENE_TEMPLATE.cue, answer_prefix=agent.SCENE_TEMPLATE.answer_prefix,
)
STYLES = {"few-shot pairs": FEW_SHOT, "long instruction + cue": LONG_INSTRUCTION,
          "short instruction + cue (chosen)": agent.SCENE_TEMPLATE}


def few_shot_task(text: str, max_tokens: int) -> Task:
    return Task(FEW_SHOT, "Text: " + text, max_tokens)


def score(text: str, scene: str) -> dict:
    speakers = set(re.findall(r"^([A-Z][A-Z ]+):", scene, flags=re.M))
    sentences = [s.strip().lower() for s in re.split(r"[.!?]", text) if s.strip()]
    return {
        "copies_example": bool(re.search(r"witch|macbeth", text, flags=re.I)),
        "names_a_speaker": any(s.title() in text or s in text for s in speakers),
        "repeats": len(sentences) != len(set(sentences)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url")
    args = parser.parse_args()
    scenes = [s.text[:1500] for s in parse_play(available_plays()["romeo-and-juliet"].read_text()) if s.text][:12]
    out = {"machine": machine(), "styles": {}}
    with endpoint_settings(args.base_url) as settings:
        client = LLMClient(settings)
        for name, template in STYLES.items():
            tasks = [few_shot_task(t, 64) if template is FEW_SHOT else Task(template, t, 64) for t in scenes]
            texts = [c.text or "" for c in client.complete(tasks)]
            scores = [score(t, s) for t, s in zip(texts, scenes)]
            out["styles"][name] = {
                "outputs": texts,
                **{k: sum(s[k] for s in scores) for k in ("copies_example", "names_a_speaker", "repeats")},
            }
    n = len(scenes)
    lines = ["# Prompt probe: completion prompts for the embedded base model", "",
             "Command: `python benchmarks/prompt_probe.py`", "",
             f"| style | copies the example (of {n}) | names a speaker (of {n}) | repeats a sentence (of {n}) |",
             "|---|---:|---:|---:|"]
    for name, r in out["styles"].items():
        lines.append(f"| {name} | {r['copies_example']} | {r['names_a_speaker']} | {r['repeats']} |")
    lines += ["", "First three outputs per style (raw, before repeated sentences are dropped):", ""]
    for name, r in out["styles"].items():
        lines += [f"- {name}: {t}" for t in r["outputs"][:3]]
    write_results("prompt_probe", out, "\n".join(lines))


if __name__ == "__main__":
    main()
