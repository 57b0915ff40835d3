"""Concurrency that fills the endpoint (issue 17, item 4): one event loop and openai client per
Python worker, reused across batches; a reduce round sends all the groups of a partition together."""

import pytest

from apwa_spark.llm import client as llm_client
from apwa_spark.llm.client import LLMClient
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.run import run_plan
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

ECHO = Template(instruction="Repeat the word below.", cue="Word:")


def test_batches_in_one_process_share_one_event_loop_and_one_openai_client(settings):
    no_cache = settings.with_overrides(**{"spark.apwa.cache.enabled": "false"})
    first = LLMClient(no_cache).complete([Task(ECHO, "alpha", 4)])
    loop = llm_client.worker_loop()
    clients = dict(llm_client._WORKER["clients"])
    second = LLMClient(no_cache).complete([Task(ECHO, "beta", 4), Task(ECHO, "gamma", 4)])
    assert [c.calls for c in first + second] == [1, 1, 1]  # each sent once (the tiny model may answer empty text)
    assert not {c.error_class for c in first + second} & {"APIConnectionError", "APITimeoutError"}
    assert llm_client.worker_loop() is loop and loop.is_running()
    assert llm_client._WORKER["clients"] == clients and len(clients) >= 1  # the second batch made no new client


def test_a_reduce_round_sends_the_groups_of_a_partition_together(spark, settings, tmp_path):
    rows = [(f"g{g}", i, f"Note {i} of group {g}: the bus leaves at {g + i} o'clock.") for g in range(8) for i in range(2)]
    df = spark.createDataFrame(rows, "g string, i long, text string")
    plan = Plan.parse("steps:\n  - {kind: reduce, template: '{text}', group_by: [g], order_by: i, max_tokens: 16, prompt: "
                      "{instruction: 'Here are notes, in order.', cue: 'One sentence saying all of the notes above:'}}\n")
    with FaultyEndpoint(settings.llm.base_url) as proxy:
        out = run_plan(df, plan, tmp_path, settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url,
                                                                        "spark.apwa.llm.concurrency": "4"}))
        got = {r.g: r.reduce0_meta.llm_calls for r in out.collect()}
    assert got == {f"g{g}": 1 for g in range(8)} and proxy.requests == 8  # one call per group, each group one row
    # one group per task at a time kept at most 2 calls in flight on local[2]; a partition's groups go together
    assert proxy.max_in_flight >= 3, proxy.max_in_flight
