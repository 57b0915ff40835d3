"""The summarize job against its floor: a bare client sending the very same prompts to the same server.

Runs the summarize job on a play (the embedded model unless --base-url is given) into a fresh
temporary output (so a fresh response cache), then rebuilds every prompt the job sent from its
tables with the project's own rendering (level 0 from ``chunks`` + ``chunk``; each reduce node with
LLM calls from its usable children's summaries), restarts the embedded server (an empty prompt
cache) and replays each level's prompts with a bare ``openai.AsyncOpenAI`` client: a level's
prompts concurrently up to the server's slots, levels one after another. Reports job seconds vs
floor seconds, each level's table seconds vs its replay seconds, the share of the ``chunks`` write
(token counting), and whether the replay's prompt tokens equal the job's (the prompts were rebuilt
exactly). With the embedded endpoint, both servers' logs stay in the job's temporary output, and a
level of one call (the play) also gets that call's time by the server's own clock in the job and
in the replay, which tells a slower call from the engine's cost. Writes results/floor_<label>.{json,md}.

    python benchmarks/floor.py [--play romeo-and-juliet] [--max-scenes N] [--base-url URL]
                               [--concurrency N] [--label NAME] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import openai
import pandas as pd
from _common import bench_session, endpoint_settings, machine, write_results

from apwa_spark.delta import read_delta
from apwa_spark.hierarchy import Child
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.endpoints import client_options, preflight, prompt_style
from apwa_spark.llm.prompts import Task, render_chat, render_completion
from apwa_spark.plan.estimate import estimate
from apwa_spark.plan.udf import agent_prompts
from apwa_spark.plays import parse_play, resolve_play
from apwa_spark.steps.reduce import numbered, text_column
from apwa_spark.summarize import summarize_plan, summarize_play
from apwa_spark.tools import chunk_texts

TARGETS = {"job_vs_floor": 1.25, "level_vs_replay": 1.3, "token_counting_share": 0.02}


def level_of(table: str) -> str:
    """``chunk`` ──► ``chunk``; ``scene_r2`` ──► ``scene``."""
    return table.rsplit("_r", 1)[0] if "_r" in table else table


def rebuild_prompts(spark, result, plan, job_lengths: bool = True) -> dict[str, list[Task]]:
    """Every task the job sent, by level, rebuilt from its tables (in write order). With
    ``job_lengths``, each task's ``max_tokens`` is the completion tokens the job's answer had (at
    least 1), for a replay that generates exactly as many (:func:`replay`)."""
    path = {t.table: t.path for t in result.levels}
    read = lambda name: read_delta(spark, path[name]).toPandas()
    mapper, reducer = plan.steps[2], plan.steps[3]
    chunks, leaves = read("chunks"), read("chunk")
    text_of = {f"{s}#{i}": t for s, i, t in zip(chunks["scene_id"], chunks["chunk_index"], chunks["chunk"])}
    sent = leaves[leaves["llm_calls"] > 0]
    inputs = agent_prompts(mapper, [pd.Series([text_of[list(kids)[0]] for kids in sent["children"]], dtype=object)])
    cap = lambda n, most: max(1, int(n)) if job_lengths else most  # noqa: E731
    tasks = {"chunk": [Task(mapper.prompt.template(), p, cap(n, mapper.max_tokens))
                       for p, n in zip(inputs, sent["completion_tokens"])]}
    text = text_column("summaries", reducer)
    nodes = {}  # node id ──► Child (text, status), every table read so far
    for stats in [t for t in result.levels if t.table != "chunks"]:  # chunk, scene_r1 …, in write order
        table = leaves if stats.table == "chunk" else read(stats.table)
        level = next((l for l in reducer.levels if l.name == level_of(stats.table)), None)
        tasks.setdefault(level_of(stats.table), [])  # a level of pass-throughs only: no prompt, still reported
        for row in table[table["llm_calls"] > 0].to_dict("records") if level else []:
            usable = [nodes[c].text for c in row["children"] if nodes[c].usable]
            prompt = reducer.template.format_map({**{k: row[k] for k in level.group_by}, text: numbered(usable)})
            tasks.setdefault(level.name, []).append(Task(level.prompt.template(), prompt,
                                                         cap(row["completion_tokens"], reducer.max_tokens)))
        nodes |= {n: Child(t if isinstance(t, str) else None, s)
                  for n, t, s in zip(table["node_id"], table[reducer.output], table["status"])}
    return tasks


async def replay(settings, style: str, levels: dict[str, list[Task]], concurrency: int,
                 job_lengths: bool = True) -> dict[str, dict]:
    """Each level's tasks through a bare ``AsyncOpenAI``, ``concurrency`` in flight, levels in order.
    With ``job_lengths``, each answer runs to exactly its task's ``max_tokens`` (the job's answer's
    length): no stop strings, and llama.cpp's and vLLM's ``ignore_eos``."""
    llm = settings.llm
    params = dict(model=llm.model, temperature=llm.temperature, frequency_penalty=llm.frequency_penalty,
                  **({"seed": llm.seed} if llm.seed is not None else {}),
                  **({"extra_body": {"ignore_eos": True}} if job_lengths else {}))
    gate = asyncio.Semaphore(concurrency)
    out = {}
    async with openai.AsyncOpenAI(**client_options(settings), timeout=llm.timeout, max_retries=llm.max_retries) as client:
        async def one(request: dict):
            async with gate:
                if style == "completion":
                    return (await client.completions.create(**request, **params)).usage
                return (await client.chat.completions.create(**request, **params)).usage

        for name, tasks in levels.items():
            requests = []
            for task in tasks:
                if style == "completion":
                    prompt, stop = render_completion(task)
                    requests.append(dict(prompt=prompt, max_tokens=task.max_tokens, **({} if job_lengths else {"stop": stop})))
                else:
                    requests.append(dict(messages=render_chat(task), max_tokens=task.max_tokens))
            started = time.perf_counter()
            usages = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True) if requests else []
            seconds = time.perf_counter() - started if requests else 0.0
            ok = [u for u in usages if not isinstance(u, BaseException)]
            prompt_tokens = sum(u.prompt_tokens for u in ok)
            out[name] = {"requests": len(requests), "errors": len(usages) - len(ok), "seconds": round(seconds, 2),
                         "first_error": next((repr(u)[:300] for u in usages if isinstance(u, BaseException)), None),
                         "prompt_tokens": prompt_tokens, "completion_tokens": sum(u.completion_tokens for u in ok),
                         "prompt_tokens_per_s": round(prompt_tokens / seconds, 1) if seconds else None}
    return out


def count_like_the_job(settings, play: str, max_scenes: int | None) -> float:
    """Seconds the chunker's token counting takes alone: the job's ``chunk`` step work (every scene
    counted, oversize ones cut and their pieces counted, through the endpoint's ``/tokenize``)."""
    scenes = [s.text for s in parse_play(resolve_play(play).read_text(encoding="utf-8"))[:max_scenes]]
    started = time.perf_counter()
    chunk_texts(scenes, settings.summarize.chunk_tokens, LLMClient(settings).count_tokens)
    return time.perf_counter() - started


def call_timings(log: Path) -> list[dict]:
    """Each completion's own time on an embedded llama.cpp server, in the order the server finished
    them, from the ``print_timing`` lines in ``log``: ``seconds`` (its ``total time``), and of it
    ``prompt_seconds`` for evaluating its ``prompt_tokens`` (those not reused from the slot's prompt
    cache) and ``eval_seconds`` for generating its ``eval_tokens`` (ints). A total takes the parts
    its task printed since its last total, so a task id met again (a restarted server) is not paired
    with an earlier call's; a part the log lacks is None. Seconds are rounded to 0.01 ms."""
    timings, parts = [], {}
    for task, kind, ms, tokens in re.findall(r"task (\d+) \|\s+(prompt eval|eval|total) time =\s*([\d.]+) ms /\s*(\d+) tokens",
                                             log.read_text(errors="replace")):
        if kind != "total":
            parts.setdefault(task, {})[kind] = (round(float(ms) / 1000, 5), int(tokens))
            continue
        mine = parts.pop(task, {})
        (prompt_s, prompt_n), (eval_s, eval_n) = mine.get("prompt eval", (None, None)), mine.get("eval", (None, None))
        timings.append({"seconds": round(float(ms) / 1000, 5), "prompt_seconds": prompt_s, "prompt_tokens": prompt_n,
                        "eval_seconds": eval_s, "eval_tokens": eval_n})
    return timings


def one_call_levels(levels: list[dict], job: list[dict], replay: list[dict]) -> dict[str, dict]:
    """For each level of one call: that call's server timings (:func:`call_timings`) in the job and
    in the replay. Levels run one after another in both, so a level's calls are the next
    ``job_calls`` (``requests``) entries of the server's list; None where a log holds fewer (a call
    the server never timed)."""
    out, seen_job, seen_replay = {}, 0, 0
    for level in levels:
        if level["job_calls"] == 1 and level["requests"] == 1:
            out[level["level"]] = {"job_call": job[seen_job] if seen_job < len(job) else None,
                                   "replay_call": replay[seen_replay] if seen_replay < len(replay) else None}
        seen_job, seen_replay = seen_job + level["job_calls"], seen_replay + level["requests"]
    return out


def call_text(call: dict | None) -> str:
    """A call's server timings (:func:`call_timings`) in words: "not in the log" for None, "?" for a
    part the log lacked."""
    if call is None:
        return "not in the log"
    prompt, generation = ("?" if call[f"{k}_seconds"] is None else f"{call[f'{k}_seconds']:.2f} s for {call[f'{k}_tokens']} tokens"
                          for k in ("prompt", "eval"))
    return f"{call['seconds']:.2f} s (prompt {prompt}, generation {generation})"


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def met(value: float | None, target: float, below: bool = False) -> str:
    return "n/a" if value is None else ("met" if (value < target if below else value <= target) else "NOT met")


def markdown(d: dict) -> str:
    j, m = d["totals"], d["machine"]
    rows = [f"| {l['level']} | {', '.join(l['tables'])} | {l['job_calls']} / {l['requests']} | "
            f"{l['job_prompt_tokens']} / {l['replay_prompt_tokens']} ({'match' if l['tokens_match'] else 'MISMATCH'}) | "
            f"{l['job_completion_tokens']} / {l['replay_completion_tokens']} | {l['job_seconds']:.1f} | "
            f"{l['replay_seconds']:.1f} | {l['replay_prompt_tokens_per_s'] or '–'} | "
            f"{l['ratio'] or '–'} ({met(l['ratio'], TARGETS['level_vs_replay'])}) |"
            for l in d["levels"]]
    return "\n".join([
        f"# Summarize job vs its floor: {d['play']}" + (f" (first {d['max_scenes']} scenes)" if d["max_scenes"] else ""), "",
        f"Command: `{('python benchmarks/floor.py ' + d['command']).strip()}`", "",
        f"Machine: {m['cpus']} CPUs, load {m['load_average_1m']} (1 min) at the end, Python {m['python']}, {m['date']}; "
        f"endpoint: {d['endpoint']}; replay concurrency {d['concurrency']}.", "",
        "| level | tables | calls job / replay | prompt tokens job / replay | completion tokens job / replay | "
        "job s | replay s | replay prompt tok/s | job / replay (target ≤ 1.3) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|", *rows, "",
        f"- Job: **{j['job_seconds']:.1f} s** (wall, `summarize_play`); floor: **{j['floor_seconds']:.1f} s** "
        f"(sum of the levels' replay seconds); job / floor = **{j['job_vs_floor']}** "
        f"(target ≤ {TARGETS['job_vs_floor']}: {met(j['job_vs_floor'], TARGETS['job_vs_floor'])}).",
        f"- Token counting: the chunker's counting alone (every scene, then the pieces of oversize ones, through the "
        f"endpoint's `/tokenize`, timed on the replay server) took {j['token_counting_seconds']:.1f} s = "
        f"**{j['token_counting_share']:.1%}** of the job (target < {TARGETS['token_counting_share']:.0%}: "
        f"{met(j['token_counting_share'], TARGETS['token_counting_share'], below=True)}). The job's `chunks` write, "
        f"which also reads the plays, runs the Spark stage and commits the table, took {j['chunks_seconds']:.1f} s.",
        *[f"- The {name} level's one call by the server's own clock (llama.cpp `print_timing`; prompt tokens: those "
          f"not reused from the slot's prompt cache): {call_text(c['job_call'])} in the job, "
          f"{call_text(c['replay_call'])} in the replay; the rest of the level's job seconds is Spark, Delta and the "
          f"plugin." for name, c in d.get("one_call_levels", {}).items()],
        "", "Estimate (`apwa-spark explain`, before the run) against actual, per plan step:", "",
        "| step | calls est. / actual | prompt tokens est. / actual | completion tokens est. (at most) / actual |",
        "|---|---:|---:|---:|",
        *[f"| {v['step']} | {v['estimated_llm_calls']} / {v['actual_llm_calls']} | {v['estimated_prompt_tokens']} / "
          f"{v['actual_prompt_tokens']} | {v['estimated_completion_tokens']} / {v['actual_completion_tokens']} |"
          for v in d["estimate_vs_actual"]], "",
        f"- Prompts rebuilt exactly (replay prompt tokens = job prompt tokens on every level): "
        f"**{'yes' if j['tokens_match'] else 'NO'}**; replay errors: {j['replay_errors']}.", "",
        "Method. The *floor* is how fast a bare client could get the job's LLM work done on the same server: "
        "every prompt the job sent is rebuilt from the job's Delta tables with the project's own rendering "
        "(`agent_prompts`, `Template`, `render_completion`/`render_chat`; a reduce node's prompt from its usable "
        "children's summaries), then sent with a plain `openai.AsyncOpenAI` (same model, temperature, "
        "seed, frequency penalty), no apwa-spark client, no response cache, no Spark, to a freshly started "
        "server (empty prompt cache). " + ("Each replayed answer is exactly as long as the job's answer to that "
        "prompt (`max_tokens` = its completion tokens, `ignore_eos`, no stop strings), so job and floor generate "
        "the same tokens: the model's answers to one prompt differ in length from run to run (3,313 against 3,426 "
        "completion tokens at the chunk level in `floor_romeo-and-juliet.md`), which is not the engine's cost." if d["job_lengths"] else
        "The replay's answers end where the model ends them (`--free-lengths`: same max_tokens and stop strings "
        "as the job), so their lengths differ from the job's.") + " A level's prompts go concurrently up to the server's slots (several rounds of "
        "a level count as that level and are sent together), levels one after another. The job's level seconds "
        "are the wall times of its Delta writes of that level's tables (LLM calls, Spark, token counting of "
        "children and the write itself); timings are noisy on a shared machine.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--play", default="romeo-and-juliet")
    parser.add_argument("--max-scenes", type=int, help="only the first N scenes (a smoke test)")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: the embedded one, restarted for the replay)")
    parser.add_argument("--concurrency", type=int, help="replay requests in flight (default: embedded.parallel)")
    parser.add_argument("--free-lengths", action="store_true",
                        help="let the replay's answers end where the model ends them (default: each as long as the job's)")
    parser.add_argument("--label", help="results file suffix (default: the play, or <play>_<N>scenes)")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    args = parser.parse_args()
    label = args.label or (f"{args.play}_{args.max_scenes}scenes" if args.max_scenes else args.play)
    spark = bench_session()
    output = tempfile.mkdtemp(prefix="apwa-floor-")
    logs = {"job": Path(output) / "job-server.log", "replay": Path(output) / "replay-server.log"}
    with endpoint_settings(args.base_url, log_file=logs["job"]) as settings:
        settings = preflight(settings)
        started = time.perf_counter()
        result = summarize_play(args.play, output, spark, settings, args.max_scenes)
        job_seconds = time.perf_counter() - started
    style = prompt_style(settings.llm)
    plan = summarize_plan([args.play], settings, args.max_scenes)
    estimated = {r["step"]: r for r in estimate(spark.range(0), plan)}
    job_lengths = not args.free_lengths
    tasks = rebuild_prompts(spark, result, plan, job_lengths)
    concurrency = args.concurrency or settings.embedded.parallel
    with endpoint_settings(args.base_url, log_file=logs["replay"]) as fresh:  # a new server: nothing of the job in its prompt cache
        replayed = asyncio.run(replay(fresh, style, tasks, concurrency, job_lengths))
        counting = count_like_the_job(fresh, args.play, args.max_scenes)
    levels = []
    for name, r in replayed.items():
        mine = [t for t in result.levels if t.table != "chunks" and level_of(t.table) == name]
        job = {k: sum(getattr(t, k) for t in mine) for k in ("seconds", "llm_calls", "prompt_tokens", "completion_tokens")}
        levels.append({"level": name, "tables": [t.table for t in mine], "job_seconds": round(job["seconds"], 2),
                       "job_calls": job["llm_calls"], "job_prompt_tokens": job["prompt_tokens"],
                       "job_completion_tokens": job["completion_tokens"], "requests": r["requests"],
                       "replay_errors": r["errors"], "replay_first_error": r["first_error"], "replay_prompt_tokens": r["prompt_tokens"],
                       "replay_completion_tokens": r["completion_tokens"], "replay_seconds": r["seconds"],
                       "replay_prompt_tokens_per_s": r["prompt_tokens_per_s"],
                       "tokens_match": r["prompt_tokens"] == job["prompt_tokens"],
                       "ratio": ratio(job["seconds"], r["seconds"])})
    floor = sum(l["replay_seconds"] for l in levels)
    single = {} if args.base_url else one_call_levels(levels, call_timings(logs["job"]), call_timings(logs["replay"]))
    actual = {"chunk": [t for t in result.levels if t.table == "chunk"],
              "summaries": [t for t in result.levels if t.table not in ("chunks", "chunk")]}
    versus = [{"step": step, **{f"estimated_{k}": estimated[step][k] for k in ("llm_calls", "prompt_tokens", "completion_tokens")},
               **{f"actual_{k}": sum(getattr(t, k) for t in tables) for k in ("llm_calls", "prompt_tokens", "completion_tokens")}}
              for step, tables in actual.items()]
    chunks = next(t.seconds for t in result.levels if t.table == "chunks")
    command = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
                       if v is not None and v is not False and k not in ("base_url", "results_dir")
                       and not (k == "play" and v == "romeo-and-juliet"))
    data = {"play": args.play, "max_scenes": args.max_scenes, "label": label, "command": command,
            "endpoint": "given (--base-url)" if args.base_url else "embedded llama-server, restarted for the replay",
            "prompt_style": style, "concurrency": concurrency, "job_lengths": job_lengths, "machine": machine(),
            "targets": TARGETS,
            "tables": [{k: getattr(t, k) for k in ("table", "rows", "llm_calls", "prompt_tokens", "completion_tokens",
                                                     "cached_tokens", "errors", "seconds")} for t in result.levels],
            "levels": levels, "one_call_levels": single, "estimate_vs_actual": versus,
            "totals": {"job_seconds": round(job_seconds, 2), "job_run_seconds": round(result.seconds, 2),
                       "floor_seconds": round(floor, 2), "job_vs_floor": ratio(job_seconds, floor),
                       "chunks_seconds": round(chunks, 2), "token_counting_seconds": round(counting, 2),
                       "token_counting_share": round(counting / job_seconds, 4),
                       "tokens_match": all(l["tokens_match"] for l in levels),
                       "replay_errors": sum(l["replay_errors"] for l in levels)}}
    write_results(f"floor_{label}", data, markdown(data), args.results_dir)


if __name__ == "__main__":
    main()
