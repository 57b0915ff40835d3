"""Real endpoints (issue 13): the API key reaches every request, the preflight, endpoint kinds, the
chat path through a gateway, and a scan of everything written for the key.

Servers: ``keyed_endpoint`` (the embedded llama-server started with ``--api-key-file``) and
``gateway`` (LiteLLM's proxy in front of it, with its own master key; chat completions, no
``/tokenize``). The key is given by env var, by Spark conf, by file and by
``spark.executorEnv.APWA_LLM_API_KEY``. The last test scans every file the runs wrote and every
captured output for both keys, so it runs last (pytest keeps file order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from apwa_spark.config import ConfigError, Settings, env_name
from apwa_spark.llm import endpoints
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.endpoints import EndpointUnavailableError, from_strict, preflight, strict_schema
from apwa_spark.plan.ir import Plan
from apwa_spark.steps.chunk import ChunkStep
from apwa_spark.steps.classify import ClassifyStep
from apwa_spark.steps.extract import ExtractStep
from apwa_spark.steps.filter import FilterStep
from apwa_spark.steps.map import MapStep
from apwa_spark.steps.redact import RedactStep
from apwa_spark.steps.reduce import ReduceStep

from conftest import SMALL

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REVIEWS = [
    (1, "The croissants were wonderful and the staff were kind. Ask Anna Berg at anna.berg@example.com."),
    (2, "Terrible service, cold soup, and we waited an hour for the bill. Never again."),
]
CONTACT = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                            "email": {"type": "string", "maxLength": 60}}, "required": ["name"]}

#: Folders the runs below write and their captured stdout/stderr: the secret scan reads them all.
WRITTEN: list[Path] = []
CAPTURED: list[str] = []


def _keyless(endpoint_url: str, tmp: Path, **keys: str) -> dict[str, str]:
    """Env-style settings pointing at ``endpoint_url`` with small budgets and a private registry; no key."""
    return {env_name("spark.apwa.llm.baseUrl"): endpoint_url, env_name("spark.apwa.run.registry"): str(tmp / "registry"),
            **{env_name(k): v for k, v in {**SMALL, **keys}.items()}}


def _cli(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APWA_")}
    return subprocess.run([str(BIN / "apwa-spark"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**clean, "PYSPARK_PYTHON": sys.executable, **env})


def _statuses(df) -> dict[str, set]:
    """``<step>_meta`` column ──► the set of statuses in it."""
    rows = df.select(*[F.col(c)["status"].alias(c) for c in df.columns if c.endswith("_meta")]).collect()
    return {c: {r[c] for r in rows} for c in df.columns if c.endswith("_meta")}


# ---- settings: where the key comes from, and that nothing drops it (no server) -------------------------

def test_every_key_source_is_named_and_rebuilt_settings_keep_the_key(tmp_path):
    from_env = Settings.load(env={"APWA_LLM_API_KEY": "sk-env"}, conf_file=tmp_path / "none.conf")
    assert (from_env.api_key(), from_env.llm.key_source) == ("sk-env", "APWA_LLM_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    from_file = Settings.load(env={"APWA_LLM_API_KEY": "sk-env"}, overrides={"spark.apwa.llm.apiKeyFile": str(key_file)})
    assert (from_file.api_key(), from_file.llm.key_source) == ("sk-file", "spark.apwa.llm.apiKeyFile (--conf)")
    rebuilt = from_file.with_overrides(**{"spark.apwa.llm.baseUrl": "http://127.0.0.1:1/v1", "spark.apwa.llm.concurrency": "2"})
    assert (rebuilt.api_key(), rebuilt.llm.key_source) == ("sk-file", "spark.apwa.llm.apiKeyFile (--conf)")
    assert "sk-file" not in json.dumps(rebuilt.as_keys()) + repr(rebuilt) + str(rebuilt)
    replaced = rebuilt.with_overrides(**{"spark.apwa.llm.apiKey": "sk-new"})
    assert (replaced.api_key(), replaced.llm.key_source) == ("sk-new", "spark.apwa.llm.apiKey")
    assert Settings.load(env={}).api_key() is None and Settings.load(env={}).llm.key_source is None


def test_an_unreadable_or_empty_key_file_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"apiKeyFile: cannot read .*missing.*point it at a file"):
        Settings.load(env={"APWA_LLM_API_KEY_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"empty; put the API key in it"):
        Settings.load(env={}, overrides={"spark.apwa.llm.apiKeyFile": str(tmp_path / "empty")})


def test_the_executor_env_key_of_the_spark_conf_is_a_key_source(spark):
    spark.conf.set("spark.executorEnv.APWA_LLM_API_KEY", "sk-executor-env")
    try:
        settings = Settings.load(spark, env={})
    finally:
        spark.conf.unset("spark.executorEnv.APWA_LLM_API_KEY")
    assert (settings.api_key(), settings.llm.key_source) == ("sk-executor-env", "spark.executorEnv.APWA_LLM_API_KEY")


# ---- endpoint kinds (no server) ---------------------------------------------------------------------------

def test_kinds_headers_and_azure_url_form():
    def at(url: str, **keys) -> Settings:
        return Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": url, "spark.apwa.llm.apiKey": "sk-x", **keys})

    openai_ = at("https://api.openai.com/v1")
    assert endpoints.kind_of(openai_.llm).name == "openai" and endpoints.prompt_style(openai_.llm) == "chat"
    assert endpoints.request_headers(openai_) == {"Authorization": "Bearer sk-x"}
    azure = at("https://acme.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21")
    assert endpoints.request_headers(azure) == {"Authorization": "Bearer sk-x", "api-key": "sk-x"}
    options = endpoints.client_options(azure)
    assert options["base_url"] == "https://acme.openai.azure.com/openai/deployments/gpt4o"
    assert options["default_query"] == {"api-version": "2024-10-21"}
    vllm = at("http://vllm:8000/v1", **{"spark.apwa.llm.kind": "vllm"})
    assert endpoints.kind_of(vllm.llm).tokenize_field == "prompt" and endpoints.prompt_style(vllm.llm) == "chat"
    forced = at("http://vllm:8000/v1", **{"spark.apwa.llm.kind": "vllm", "spark.apwa.llm.promptStyle": "completion"})
    assert endpoints.structured_params(forced.llm, "completion", CONTACT) == {"extra_body": {"structured_outputs": {"json": CONTACT}}}
    assert endpoints.request_headers(Settings.load(env={})) == {}


def test_strict_schema_wraps_closes_and_reads_back():
    labels = {"type": "string", "enum": ["positive", "negative"]}
    sent = strict_schema(labels)
    assert sent == {"type": "object", "properties": {"value": labels}, "required": ["value"], "additionalProperties": False}
    assert json.loads(from_strict('{"value": "positive"}', labels)) == "positive"
    closed = strict_schema(CONTACT)
    assert closed["required"] == ["name", "email"] and closed["additionalProperties"] is False
    assert closed["properties"]["email"] == {"anyOf": [CONTACT["properties"]["email"], {"type": "null"}]}
    answer = json.loads(from_strict('{"name": "Anna", "email": null}', CONTACT))
    assert answer == {"name": "Anna"}
    jsonschema.validate(answer, CONTACT)
    assert from_strict("not json", labels) == "not json"  # left for validation to report


def test_counting_failure_falls_back_to_the_estimate():
    down = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://127.0.0.1:9/v1", "spark.apwa.llm.kind": "llamacpp"})
    texts = ["x" * 30, "y" * 31]
    assert LLMClient(down).count_tokens(texts) == [10, 11]  # ceil(chars / 3), no exception


# ---- the key-checked server --------------------------------------------------------------------------------

@pytest.mark.model
def test_preflight_resolves_the_kind_and_fails_in_one_line(keyed_endpoint, api_key, tmp_path):
    settings = Settings.load(env=_keyless(keyed_endpoint.base_url, tmp_path, **{"spark.apwa.llm.apiKey": api_key}))
    checked = preflight(settings)
    assert (checked.llm.kind, checked.llm.prompt_style, checked.api_key()) == ("llamacpp", "completion", api_key)
    wrong = Settings.load(env={**_keyless(keyed_endpoint.base_url, tmp_path), "APWA_LLM_API_KEY": "sk-wrong"})
    with pytest.raises(EndpointUnavailableError) as err:
        preflight(wrong)
    message = str(err.value)
    assert "rejected the API key (HTTP 401)" in message and f"127.0.0.1:{keyed_endpoint.port}" in message
    assert "key from APWA_LLM_API_KEY" in message and "\n" not in message and "sk-wrong" not in message
    with pytest.raises(EndpointUnavailableError, match=r"model 'no-such-model' is not served \(served: gemma"):
        preflight(settings.with_overrides(**{"spark.apwa.llm.model": "no-such-model"}))
    with pytest.raises(EndpointUnavailableError, match=r"unreachable .* at http://127\.0\.0\.1:9/v1 \(key from"):
        preflight(settings.with_overrides(**{"spark.apwa.llm.baseUrl": "http://127.0.0.1:9/v1"}))


@pytest.mark.model
def test_token_counts_send_the_key_and_run_concurrently(keyed_endpoint, api_key):
    import httpx

    client = LLMClient(keyed_endpoint.settings)
    texts = [f"Scene {i}: Two households, both alike in dignity, in fair Verona where we lay our scene." for i in range(24)]
    counts = client.count_tokens(texts)
    direct = httpx.post(keyed_endpoint.base_url[:-3] + "/tokenize", json={"content": texts[0]},
                        headers={"Authorization": f"Bearer {api_key}"}).json()["tokens"]
    assert counts[0] == len(direct) and counts[0] != endpoints.estimate_tokens(texts[0])
    assert httpx.post(keyed_endpoint.base_url[:-3] + "/tokenize", json={"content": "x"}).status_code == 401  # it checks keys


@pytest.mark.model
def test_cli_wrong_key_unknown_model_print_one_line_exit_3_and_write_no_table(keyed_endpoint, api_key, tmp_path):
    out = tmp_path / "out"
    wrong = _cli("summarize", "--play", "macbeth", "--max-scenes", "1", "--output", str(out),
                 env={**_keyless(keyed_endpoint.base_url, tmp_path), "APWA_LLM_API_KEY": "sk-wrong-key"})
    assert wrong.returncode == 3, wrong.stderr[-2000:]
    [line] = wrong.stderr.strip().splitlines()
    assert line.startswith("apwa-spark summarize: error: LLM endpoint check failed: the endpoint rejected the API key")
    assert f"127.0.0.1:{keyed_endpoint.port}" in line and "key from APWA_LLM_API_KEY" in line and "sk-wrong-key" not in line
    assert not out.exists()  # no table, not even the folder
    key_file = tmp_path / "wrong.key"
    key_file.write_text("sk-wrong-in-file")
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    run = _cli("run", "Classify each text as spam or not", "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
               "--conf", f"spark.apwa.llm.apiKeyFile={key_file}", env=_keyless(keyed_endpoint.base_url, tmp_path))
    assert run.returncode == 3 and "key from spark.apwa.llm.apiKeyFile (--conf)" in run.stderr
    assert "Traceback" not in run.stderr and not out.exists()
    model = _cli("extract", "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--schema", "a STRING",
                 "--conf", "spark.apwa.llm.model=gpt-9", env={**_keyless(keyed_endpoint.base_url, tmp_path), "APWA_LLM_API_KEY": api_key})
    assert model.returncode == 3 and "model 'gpt-9' is not served" in model.stderr and not out.exists()
    assert "exit codes:" in _cli("--help", env={}).stdout
    CAPTURED.extend([wrong.stdout, wrong.stderr, run.stdout, run.stderr, model.stdout, model.stderr])


@pytest.mark.model
def test_planned_query_with_the_key_from_spark_conf(spark, keyed_endpoint, api_key, tmp_path_factory, capfd):
    import apwa_spark

    folder = tmp_path_factory.mktemp("keyed-query")
    WRITTEN.append(folder)
    df = spark.createDataFrame(REVIEWS, "id long, text string")
    keys = {"spark.apwa.llm.baseUrl": keyed_endpoint.base_url, "spark.apwa.llm.apiKey": api_key,
            "spark.apwa.run.registry": str(folder / "registry")}
    for key, value in keys.items():
        spark.conf.set(key, value)
    try:
        settings = Settings.load(spark, env={})
        assert settings.llm.key_source == "spark.apwa.llm.apiKey"
        plan = apwa_spark.plan(df, "Classify each review as one of: positive, negative", settings)
        result = apwa_spark.run(df, plan, folder / "out", settings)
    finally:
        for key in keys:
            spark.conf.unset(key)
    assert [s.kind for s in plan.steps] == ["classify"]
    assert result.count() == 2 and all(s == {"ok"} for s in _statuses(result).values())
    CAPTURED.extend(capfd.readouterr())


@pytest.mark.model
def test_sql_function_with_the_key_from_a_file(spark, keyed_endpoint, api_key, tmp_path_factory, capfd):
    from apwa_spark.sql import register

    folder = tmp_path_factory.mktemp("keyed-sql")
    key_file = folder.parent / "sql-key"  # outside the scanned folder: it holds the key on purpose
    key_file.write_text(api_key)
    settings = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": keyed_endpoint.base_url,
                                                "spark.apwa.llm.apiKeyFile": str(key_file)})
    register(spark, settings)
    spark.createDataFrame(REVIEWS, "id long, text string").createOrReplaceTempView("keyed_reviews")
    rows = spark.sql("SELECT id, apwa_classify_or_error(text, array('positive', 'negative')) AS r FROM keyed_reviews").collect()
    assert all(r.r.errorMessage is None and r.r.result in ("positive", "negative") for r in rows), rows
    WRITTEN.append(folder)
    CAPTURED.extend(capfd.readouterr())


@pytest.mark.model
def test_notebook_with_the_key_from_env(keyed_endpoint, api_key, tmp_path_factory):
    from apwa_spark.notebook import notebook_outputs, run_notebook

    folder = tmp_path_factory.mktemp("keyed-notebook")
    WRITTEN.append(folder)
    env = {**_keyless(keyed_endpoint.base_url, folder), "APWA_LLM_API_KEY": api_key,
           "APWA_NOTEBOOK_OUTPUT": str(folder / "out")}
    nb = run_notebook(REPO / "notebooks" / "02_pii_redaction.py", timeout=400, env=env, save_to=folder / "nb.ipynb",
                      kernel_log=folder / "kernel.log")
    outputs = notebook_outputs(nb)
    assert "checks passed" in outputs and keyed_endpoint.base_url in outputs
    assert any((folder / "out").iterdir())


@pytest.mark.model
def test_spark_submit_with_the_key_from_executor_env_and_an_event_log(keyed_endpoint, api_key, small_play, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keyed-submit")
    WRITTEN.append(folder)
    (folder / "events").mkdir()
    out = subprocess.run(
        [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.eventLog.enabled=true",
         "--conf", "spark.eventLog.compress=false",  # Spark 4 writes zstd by default: a byte search would see nothing
         "--conf", f"spark.eventLog.dir={folder / 'events'}", "--conf", f"spark.executorEnv.APWA_LLM_API_KEY={api_key}",
         "--conf", f"spark.apwa.llm.baseUrl={keyed_endpoint.base_url}", "--conf", f"spark.apwa.run.registry={folder / 'registry'}",
         "jobs/summarize.py", "--play", str(small_play), "--max-scenes", "2", "--output", str(folder / "out"),
         *[f"--conf={k}={v}" for k, v in SMALL.items()], "-v"],
        env={k: v for k, v in os.environ.items() if not k.startswith("APWA_")} | {"PYSPARK_PYTHON": sys.executable},
        cwd=REPO, capture_output=True, text=True, timeout=900)
    CAPTURED.extend([out.stdout, out.stderr])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Summary (ok)" in out.stdout and "rows failed: 0" in out.stdout
    events = "".join(p.read_text() for p in (folder / "events").rglob("events_*"))
    assert "SparkListenerEnvironmentUpdate" in events and "spark.executorEnv.APWA_LLM_API_KEY" in events  # plain text, redacted


# ---- the chat path through a gateway (LiteLLM proxy: chat completions only, no /tokenize) ------------------

def _via_gateway(gateway, folder: Path, **keys: str) -> Settings:
    return Settings.load(env={**_keyless(gateway.base_url, folder, **keys), "APWA_LLM_API_KEY": gateway.master_key})


@pytest.mark.model
def test_gateway_is_detected_and_counts_tokens_locally(gateway, tmp_path):
    checked = preflight(_via_gateway(gateway, tmp_path))
    assert (checked.llm.kind, checked.llm.prompt_style) == ("gateway", "chat")
    assert LLMClient(checked).count_tokens(["abcdef"]) == [2]
    with pytest.raises(EndpointUnavailableError, match=r"refused GET /models with this API key \(HTTP 400\)"):
        preflight(checked.with_overrides(**{"spark.apwa.llm.apiKey": "sk-not-the-master-key"}))  # LiteLLM: 400


@pytest.mark.model
def test_gateway_summarize_slice_in_chat_style(spark, gateway, small_play, tmp_path_factory, capfd):
    from apwa_spark.summarize import summarize_play

    folder = tmp_path_factory.mktemp("gateway-summarize")
    WRITTEN.append(folder)
    settings = _via_gateway(gateway, folder, **{"spark.apwa.llm.promptStyle": "chat"})
    result = summarize_play(str(small_play), folder / "out", spark, settings, max_scenes=2)
    assert result.errors_by_class == {} and result.root["status"] == "ok"
    CAPTURED.extend(capfd.readouterr())


def _run_plan(spark, gateway, name: str, steps: list, tmp_path_factory):
    from apwa_spark.plan.run import run_plan

    folder = tmp_path_factory.mktemp(f"gateway-{name}")
    WRITTEN.append(folder)
    settings = _via_gateway(gateway, folder, **{"spark.apwa.llm.promptStyle": "chat"})
    return run_plan(spark.createDataFrame(REVIEWS, "id long, text string"), Plan(steps=steps), folder / "out", settings)


@pytest.mark.model
def test_gateway_classify_and_extract_plans_in_chat_style(spark, gateway, tmp_path_factory, capfd):
    classified = _run_plan(spark, gateway, "classify", [ClassifyStep(template="Review: {text}", labels=["positive", "negative"],
                                                                     output="sentiment")], tmp_path_factory)
    assert _statuses(classified) == {"classify0_meta": {"ok"}}
    rows = classified.select("sentiment", "classify0_meta.prompt_tokens").collect()
    assert {r.sentiment for r in rows} <= {"positive", "negative"}
    assert all(r.prompt_tokens >= 20 for r in rows)  # the chat prompt arrived whole (instruction + review)
    extracted = _run_plan(spark, gateway, "extract", [ExtractStep(template="Find the contact person in: {text}",
                                                                  output_schema=CONTACT, output="contact", max_tokens=64)],
                          tmp_path_factory)
    assert _statuses(extracted) == {"extract0_meta": {"ok"}}
    assert extracted.schema["contact"].dataType.simpleString() == "struct<name:string,email:string>"
    for row in extracted.select("contact").collect():
        jsonschema.validate({k: v for k, v in row.contact.asDict().items() if v is not None}, CONTACT)
    CAPTURED.extend(capfd.readouterr())


@pytest.mark.model
def test_gateway_other_step_kinds_planner_and_sql_in_chat_style(spark, gateway, tmp_path_factory, capfd):
    import apwa_spark
    from apwa_spark.sql import register

    steps = [ChunkStep(column="text", max_chars=400),
             MapStep(template="Say in five words what this review is about: {chunk}", output="gist", max_tokens=24),
             RedactStep(column="chunk"),  # replaces `chunk` with `redacted` (no PII kept)
             FilterStep(template="Is this a review of a place? {redacted}")]
    result = _run_plan(spark, gateway, "steps", steps, tmp_path_factory)
    assert result.count() >= 1 and all(s == {"ok"} for s in _statuses(result).values()), _statuses(result)
    reduced = _run_plan(spark, gateway, "reduce", [ReduceStep(template="Combine into one sentence:\n{text}", max_tokens=32)],
                        tmp_path_factory)
    [summary] = reduced.collect()
    assert summary.reduce0_meta.status == "ok" and summary.reduce0_meta.llm_calls == 1 and summary.summary
    folder = tmp_path_factory.mktemp("gateway-planner")
    WRITTEN.append(folder)
    settings = _via_gateway(gateway, folder, **{"spark.apwa.llm.promptStyle": "chat"})
    df = spark.createDataFrame(REVIEWS, "id long, text string")
    plan = apwa_spark.plan(df, "Classify each review as one of: positive, negative", settings)
    # a valid, checked plan from the model's chat answers (which kind the 270M base model picks in chat is its own matter)
    assert plan.provenance.decided_by["step0.kind"] == "model" and plan.provenance.llm_calls >= 1
    plan.check(df.columns)
    register(spark, settings)
    df.createOrReplaceTempView("gateway_reviews")
    rows = spark.sql("SELECT apwa_classify_or_error(text, array('positive', 'negative')) AS r FROM gateway_reviews").collect()
    assert all(r.r.errorMessage is None and r.r.result in ("positive", "negative") for r in rows), rows
    # every other SQL function, in the chat style, on one row: each one answers, and none is an error
    [row] = spark.sql(
        "SELECT apwa_complete_or_error('Say in three words what this review is about: ' || text, map('maxTokens', '16')) AS complete, "
        "apwa_extract_or_error(text, 'place STRING, liked BOOLEAN') AS extract, "
        "apwa_filter_or_error(text, 'Is this a review of a place?') AS filter, "
        "apwa_redact_or_error(text) AS redact, apwa_summarize_or_error(text) AS summarize, "
        "apwa_summarize_texts_or_error(array(text, text || ' Again.')) AS texts "
        "FROM gateway_reviews WHERE id = 1").collect()
    answers = row.asDict()
    assert all(a.errorMessage is None and a.result is not None for a in answers.values()), answers
    [agg] = spark.sql("SELECT apwa_summarize_agg(text, id) AS s FROM gateway_reviews").collect()
    assert agg.s
    CAPTURED.extend(capfd.readouterr())


@pytest.mark.model
def test_jobs_sent_only_chat_completions_through_the_gateway(gateway):
    routes = gateway.routes()
    posts = [(path, status) for method, path, status in routes if method == "POST"]
    assert ("/v1/chat/completions", 200) in posts
    assert all(path == "/v1/chat/completions" for path, _ in posts), posts  # no /v1/completions, no /tokenize
    assert all(status == 200 for _, status in posts), posts


# ---- the secret scan: last ---------------------------------------------------------------------------------

@pytest.mark.model
def test_no_key_in_any_file_written_or_output_captured(api_key, gateway):
    secrets = [api_key.encode(), gateway.master_key.encode()]
    assert len(WRITTEN) >= 8, WRITTEN  # every run above recorded its folder
    files = [p for root in WRITTEN for p in root.rglob("*") if p.is_file()]
    parquet = [p for p in files if p.suffix == ".parquet"]
    assert not [p for p in files if p.suffix in (".zstd", ".lz4", ".gz", ".zip")]  # bytes a search could not read
    assert len(parquet) >= 10 and any("events" in p.parts for p in files)  # tables, caches, dead letters, event log
    hits = [p for p in files if any(s in p.read_bytes() for s in secrets)]
    for path in parquet:
        text = json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
        hits += [path] if any(s in text for s in secrets) else []
    assert hits == []
    captured = "\n".join(CAPTURED)
    assert len(captured) > 1000 and not any(s.decode() in captured for s in secrets)
