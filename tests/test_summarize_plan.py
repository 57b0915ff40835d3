"""The summarize job is a plan (issue 16, item 2): `summarize --show-plan` prints it, `explain`
shows it, and `run --plan` over that file writes the job's tables, through the same runner."""

import shutil

import pytest

from apwa_spark import cli
from apwa_spark.delta import read_delta
from apwa_spark.plan.ir import Plan
from apwa_spark.runs import CACHE
from apwa_spark.summarize import summarize_plan

pytestmark = pytest.mark.model


def _conf(settings, **more) -> list[str]:
    keys = {k: v for k, v in settings.as_keys().items() if k.startswith(("spark.apwa.summarize.", "spark.apwa.llm.baseUrl",
                                                                          "spark.apwa.run.registry"))}
    return [a for k, v in {**keys, **more}.items() for a in ("--conf", f"{k}={v}")]


@pytest.fixture(scope="module")
def plan_file(settings, small_play, tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "summarize.yaml"
    path.write_text(summarize_plan(str(small_play), settings).to_yaml())
    return path


def test_the_job_is_read_plays_chunk_map_reduce_over_levels(settings, small_play, plan_file, capsys):
    assert cli.main(["summarize", "--play", str(small_play), "--show-plan", *_conf(settings)]) == 0
    plan = Plan.parse(capsys.readouterr().out)
    assert [s.kind for s in plan.steps] == ["read_plays", "chunk", "map", "reduce"]
    assert [level.name for level in plan.steps[-1].levels] == ["scene", "act", "play"]
    assert plan.steps[1].max_tokens == settings.summarize.chunk_tokens and plan.steps[-1].token_budget == settings.summarize.reduce_tokens
    several = summarize_plan([str(small_play), "macbeth"], settings)
    assert [level.name for level in several.steps[-1].levels] == ["scene", "act", "play", "corpus"]
    assert plan.plan_id == Plan.parse(plan_file.read_text()).plan_id  # what --show-plan prints is the job's plan


def test_explain_shows_the_summarize_plan_without_an_input(settings, plan_file, capsys):
    assert cli.main(["explain", "--plan", str(plan_file), *_conf(settings)]) == 0
    out = capsys.readouterr().out
    assert "kind: read_plays" in out and "# Spark physical plan" in out and "ArrowEvalPython" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"scenes", "chunks", "chunk", "summaries", "total"} <= set(rows)
    calls = lambda step: int(rows[step].split("|")[3])
    assert calls("chunks") == 0 and calls("chunk") >= 4 and calls("summaries") >= 3  # 4 scenes, 2 acts, 1 play


def test_run_plan_file_writes_the_summarize_jobs_tables(spark, settings, small_run, plan_file, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(f"{small_run.output}/{CACHE}", cache)  # the job's answers: the plan run repeats no call
    out = tmp_path / "out"
    assert cli.main(["run", "--plan", str(plan_file), "--output", str(out),
                     *_conf(settings, **{"spark.apwa.cache.path": str(cache)})]) == 0
    printed = capsys.readouterr().out
    for level in small_run.levels:
        assert f"[apwa] {level.table}: {level.rows} rows" in printed, level.table
        if level.table == "chunks":
            continue
        mine = read_delta(spark, str(out / level.table)).toPandas().sort_values("node_id").reset_index(drop=True)
        theirs = read_delta(spark, level.path).toPandas().sort_values("node_id").reset_index(drop=True)
        assert mine["node_id"].tolist() == theirs["node_id"].tolist(), level.table
        assert [list(c) for c in mine["children"]] == [list(c) for c in theirs["children"]], level.table
        assert mine["status"].tolist() == theirs["status"].tolist() and mine["summary"].equals(theirs["summary"])
        assert mine["llm_calls"].sum() == 0, level.table
    [root] = read_delta(spark, str(out / "result")).collect()
    assert root.node_id == small_run.root["node_id"] and root.summary == small_run.summary
