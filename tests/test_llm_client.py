import json
import shutil
import threading
import time

import pytest

from apwa_spark import agent
from apwa_spark.config import Settings
from apwa_spark.llm.cache import ResponseCache, shared_cache
from apwa_spark.llm.client import EndpointUnavailableError, LLMClient
from apwa_spark.llm.endpoints import preflight
from apwa_spark.llm.prompts import Task, Template
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

SCENE = ("ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
         "JULIET: O Romeo, Romeo! wherefore art thou Romeo?")


def test_completion_carries_text_and_token_usage(settings):
    [c] = agent.summarize_texts([SCENE], settings)
    assert c.status == "ok", c.error
    assert c.text.startswith("In this part,") and len(c.text) > len("In this part,")
    assert c.prompt_tokens > 20 and 0 < c.completion_tokens <= 40
    assert c.calls == 1


def test_null_and_empty_text_get_error_status_without_a_call(settings):
    results = agent.summarize_texts([None, "", "   "], settings)
    assert [r.status for r in results] == ["error"] * 3
    assert all(r.error.startswith("EmptyInput") and r.calls == 0 for r in results)


def test_identical_prompts_in_a_batch_are_sent_once(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        results = agent.summarize_texts([SCENE, SCENE, SCENE], local)
    assert proxy.requests == 1
    assert [r.calls for r in results] == [1, 0, 0]
    assert len({r.text for r in results}) == 1


def test_a_key_stored_twice_reads_as_its_first_answer(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    cache.put_many([("k", "first answer", "m", 10, 2)])
    time.sleep(0.01)  # created_ms orders the answers
    cache.put_many([("k", "a later answer", "m", 10, 3), ("j", "other", "m", 5, 1)])
    for _ in range(3):
        assert {k: r["text"] for k, r in cache.get_many(["k", "j", "absent"]).items()} == {"k": "first answer", "j": "other"}


def test_a_process_keeps_one_open_cache_per_job_that_sees_other_writers(tmp_path):
    path = tmp_path / "cache"
    shared = shared_cache(path, run_id="job1")
    assert shared_cache(str(path), run_id="job1") is shared
    assert shared_cache(path, run_id="job2") is not shared and shared_cache(path) is not shared_cache(path)
    ResponseCache(path).put_many([("a", "from another task", "m", 1, 1)])  # another process's appends
    assert shared.get_many(["a"])["a"]["text"] == "from another task"
    ResponseCache(path).put_many([("b", "later", "m", 1, 1)])
    assert set(shared.get_many(["a", "b", "absent"])) == {"a", "b"}
    shutil.rmtree(path)  # the output deleted between two jobs of one session, then written again
    ResponseCache(path).put_many([("c", "new table", "m", 1, 1)])
    next_job = shared_cache(path, run_id="job3")
    assert {k: r["text"] for k, r in next_job.get_many(["a", "b", "c"]).items()} == {"c": "new table"}
    next_job.put_many([("d", "mine", "m", 1, 1)])
    assert set(ResponseCache(path).get_many(["a", "c", "d"])) == {"c", "d"}


def test_endpoint_down_names_the_url_and_the_embedded_fix():
    down = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://127.0.0.1:9/v1"})
    with pytest.raises(EndpointUnavailableError) as err:
        preflight(down, timeout=2)
    assert "http://127.0.0.1:9/v1" in str(err.value) and "apwa-spark serve" in str(err.value)


def test_calls_to_a_down_endpoint_are_error_rows_not_exceptions():
    down = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://127.0.0.1:9/v1", "spark.apwa.llm.maxRetries": "0"})
    [c] = agent.summarize_texts([SCENE], down)
    assert c.status == "error" and "127.0.0.1:9" in c.error


def test_non_json_response_body_is_retried_then_an_error_row(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url, non_json=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.maxRetries": "2"})
        [c] = agent.summarize_texts([SCENE], local)
    assert c.status == "error" and c.error_class == "MalformedResponse"
    assert proxy.faults["non_json"] == 3 and c.calls == 3  # the call and maxRetries retries


def test_json_step_with_broken_json_output_keeps_the_raw_output(settings, endpoint):
    schema = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 60}}, "required": ["summary"]}
    template = Template(instruction="Summarize as JSON.", cue="JSON:")
    task = Task(template, SCENE, max_tokens=120, json_schema=schema)
    [good] = LLMClient(settings).complete([task])
    assert good.status == "ok", good.error  # the real endpoint, constrained by the schema
    with FaultyEndpoint(endpoint.base_url, bad_json_output=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        [bad] = LLMClient(local).complete([task])
    assert bad.status == "error" and bad.error.startswith("InvalidJSON") and bad.calls == 2  # with its repair
    assert bad.text == '{"summary": "unterminated'


def test_answer_cut_at_max_tokens_is_repaired_under_a_length_bounded_schema(settings):
    schema = {"type": "object", "properties": {"copy": {"type": "string"}}, "required": ["copy"]}
    template = Template(instruction="Copy the whole passage, word for word, into the JSON field copy.", cue="JSON:")
    [c] = LLMClient(settings).complete([Task(template, SCENE * 3, max_tokens=20, json_schema=schema)])
    # the first answer does not fit 20 tokens (TruncatedJSON); the repair's grammar caps copy at 20 - 11 = 9 characters
    assert c.status == "ok" and c.calls == 2, c.error
    assert 0 < len(json.loads(c.text)["copy"]) <= 9


def test_token_counts_come_from_the_endpoint_tokenizer(settings):
    [n] = LLMClient(settings).count_tokens([SCENE])
    assert 20 < n < len(SCENE)


def test_starting_a_running_endpoint_again_starts_no_second_server(endpoint):
    """``with EmbeddedEndpoint(s).start() as e`` once leaked the first server (``__enter__`` started another)."""
    process = endpoint._process
    assert endpoint.start() is endpoint and endpoint._process is process and process.poll() is None


def test_a_killed_driver_leaves_no_orphan_server(tmp_path):
    """The server gets SIGTERM when the process that started it dies, even by SIGKILL."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import time\nfrom apwa_spark.config import Settings\nfrom apwa_spark.endpoint import EmbeddedEndpoint\n"
              "e = EmbeddedEndpoint(Settings.load(env={})).start()\nprint(e._process.pid, flush=True)\ntime.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server = int(driver.stdout.readline())
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{server}") and _state(server) != "Z":
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{server}") or _state(server) == "Z", "llama-server outlived its driver"


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_the_embedded_endpoint_caps_calls_in_flight_at_its_slots_per_task(endpoint):
    s = endpoint.settings
    assert s.llm.server_slots == s.embedded.parallel == 4 and s.llm.concurrency == 4
    assert LLMClient(s, tasks=1).concurrency == 4 and LLMClient(s, tasks=2).concurrency == 2
    assert LLMClient(s.with_overrides(**{"spark.apwa.llm.serverSlots": "6"}), tasks=4).concurrency == 2  # ceil(6 / 4)
    elsewhere = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://vllm-host:8000/v1"})
    assert LLMClient(elsewhere, tasks=2).concurrency == 4  # slots unknown: llm.concurrency as set


def test_a_job_on_a_remote_master_without_base_url_warns_that_executors_cannot_reach_the_embedded_endpoint(caplog):
    from apwa_spark.endpoint import job_endpoint

    with caplog.at_level("WARNING", logger="apwa_spark.endpoint"):
        with job_endpoint(Settings.load(env={}), "yarn") as started:
            assert started.llm.base_url.startswith("http://127.0.0.1:")
            preflight(started)  # it answers
            assert any("spark.master is yarn" in r.getMessage() and "spark.apwa.llm.baseUrl" in r.getMessage()
                       for r in caplog.records)
            caplog.clear()
            with job_endpoint(started, "yarn") as configured:  # a configured baseUrl is checked and kept, no warning
                assert configured.llm.base_url == started.llm.base_url and configured.llm.prompt_style == "completion"
            assert not caplog.records


# ---- rate limits and quota (issue 17, item 3) ----------------------------------------------------------

TOPIC = Template(instruction="Name the topic in two words.", cue="Topic:")


def _topics(n: int) -> list[Task]:
    return [Task(TOPIC, f"{SCENE} (line {i})", max_tokens=4) for i in range(n)]


def _via(settings, proxy, **keys):
    return settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.cache.enabled": "false", **keys})


def test_clients_of_one_run_share_one_limiter_that_every_request_and_retry_passes(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url, script=("http_500", "http_500")) as proxy:
        local = _via(settings, proxy, **{"spark.apwa.llm.rpm": "6000", "spark.apwa.llm.maxRetries": "2"})
        first, second = LLMClient(local, run_id="shared-run"), LLMClient(local, run_id="shared-run")
        assert first.limiter is second.limiter and LLMClient(local, run_id="another-run").limiter is not first.limiter
        [a] = first.complete(_topics(1))  # two 500s retried by the openai client, then an answer
        [b] = second.complete(_topics(2)[1:])
    assert a.status == b.status == "ok" and a.calls == 3 and proxy.requests == 4
    assert first.limiter.requests == proxy.requests  # the openai client's retries went through the limiter too


def test_a_429_with_retry_after_pauses_every_call_of_the_process(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url, retry_after=2.0, script=("http_429",)) as proxy:
        local = _via(settings, proxy, **{"spark.apwa.llm.concurrency": "2", "spark.apwa.llm.maxRetries": "2"})
        client = LLMClient(local, run_id="paused-run")
        results = client.complete(_topics(6))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    [(refused_at, _)] = [(t, f) for t, f in proxy.arrivals if f == "http_429"]
    # a request already on its way when the 429 came back may arrive just after it; every later one,
    # from any task of the batch, waited out the Retry-After
    later = [t - refused_at for t, f in proxy.arrivals if t - refused_at > 0.5]
    assert len(later) >= 4 and min(later) >= 2.0 - 0.05, later
    assert client.limiter.pauses == 1


def test_a_quota_exhausted_429_fails_fast_and_later_calls_make_no_request(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url, insufficient_quota=1.0) as proxy:
        local = _via(settings, proxy, **{"spark.apwa.llm.concurrency": "1", "spark.apwa.llm.maxRetries": "3"})
        client = LLMClient(local, run_id="quota-run")
        results = client.complete(_topics(4))
    assert proxy.requests == 1  # not retried, and nothing sent after it
    assert client.limiter._in_flight == 0  # the refused request is no longer counted as in flight
    assert [r.error_class for r in results] == ["QuotaExhausted"] * 4 and [r.calls for r in results] == [1, 0, 0, 0]
    assert "raise the quota" in results[0].error and "127.0.0.1" in results[0].error


def test_no_60_second_window_gets_more_than_the_rpm():
    from apwa_spark.llm.ratelimit import RateLimiter

    limiter = RateLimiter(rpm=30, tpm=None)
    start = time.monotonic()
    sends = sorted(time.monotonic() - start + limiter.delay(10) for _ in range(90))  # 90 booked at once
    assert max(sum(1 for t in sends if s <= t < s + 60) for s in sends) <= 30
    assert sends[-1] < 3 * 60 + 15  # and the rate is kept up: 90 requests in about three minutes


def test_the_rate_share_follows_the_processes_actually_sending():
    from apwa_spark.llm.budget import BudgetServer
    from apwa_spark.llm.ratelimit import SHARE_REFRESH_SECONDS, RateLimiter

    s = Settings.load(env={})
    with BudgetServer(s.budget, s.price, active_seconds=SHARE_REFRESH_SECONDS + 0.5) as server:
        first = RateLimiter(rpm=60, tpm=6000, tasks=8, share_url=server.url, startup_seconds=0)  # 8 cores, but who sends?
        assert first.processes == 8
        first.delay(1)
        assert first.processes == 1  # alone: the whole rate, not an eighth of it
        second = RateLimiter(rpm=60, tpm=6000, tasks=8, share_url=server.url, startup_seconds=0)
        second.delay(1)
        assert second.processes == 2
        time.sleep(SHARE_REFRESH_SECONDS + 0.1)
        first.delay(1)
        assert first.processes == 2  # the first hears of the second at its next report
        time.sleep(SHARE_REFRESH_SECONDS + 0.6)  # the second stops sending
        first.delay(1)
        assert first.processes == 1
    assert not server.enabled  # no spark.apwa.budget.*: the server only counted processes


def test_a_process_that_finds_itself_alone_at_its_start_keeps_its_share_until_the_others_could_have_reported():
    """Two processes starting together: the first to report is alone on the job server for a moment.
    Taking the whole rate then, it booked its first requests at twice its share (13 requests in a
    minute at rpm 12 on local-cluster[2,1,1024]); it keeps 1 / tasks until ``startup_seconds`` passed."""
    from apwa_spark.llm.budget import BudgetServer
    from apwa_spark.llm.ratelimit import SHARE_REFRESH_SECONDS, RateLimiter

    s = Settings.load(env={})
    with BudgetServer(s.budget, s.price) as server:
        first = RateLimiter(rpm=12, tpm=None, tasks=2, share_url=server.url, startup_seconds=SHARE_REFRESH_SECONDS)
        waits = [first.delay(1) for _ in range(3)]  # a task's burst of bookings, before the other has reported
        assert first.processes == 2 and waits[1] > 60 / 6 and waits[2] > 2 * 60 / 6  # half the rate: 5 a minute
        time.sleep(SHARE_REFRESH_SECONDS + 0.1)
        first.delay(1)
        assert first.processes == 1  # still alone once the others could have reported: the whole rate


def test_a_process_waiting_out_its_share_stays_counted_until_its_booked_request_is_sent():
    """A process at a low share books its next request seconds ahead; the job server must count it
    until that request is sent, or the others take its share meanwhile and a minute gets more than
    the rpm (seen on local-cluster[2,1,1024]: one process at 11 a minute beside one at 5, rpm 12)."""
    from apwa_spark.llm.budget import BudgetServer
    from apwa_spark.llm.ratelimit import RateLimiter

    s = Settings.load(env={})
    with BudgetServer(s.budget, s.price, active_seconds=3.0) as server:
        other = RateLimiter(rpm=24, tpm=None, tasks=2, share_url=server.url)
        slow = RateLimiter(rpm=24, tpm=None, tasks=2, share_url=server.url)
        other.delay(1)
        assert slow.delay(1) == 0 and slow.processes == 2  # its burst: sent at once
        wait = slow.delay(1)  # the next: 12 a minute each, less the burst, so about 5.5 s ahead
        assert 4.5 < wait < 6
        time.sleep(4.0)  # past the server's 3 s since slow last reported, before its request is sent
        other.delay(1)
        assert other.processes == 2  # slow still counts: the other keeps half the rate


def test_a_process_with_a_request_in_flight_past_the_activity_window_stays_counted():
    """A process books nothing while its one request is in flight (a long answer at concurrency 1):
    it keeps reporting until the request ends, or the job server drops it after its activity window
    and the others take its share while it is still sending."""
    from apwa_spark.llm.budget import BudgetServer
    from apwa_spark.llm.ratelimit import SHARE_REFRESH_SECONDS, RateLimiter

    s = Settings.load(env={})
    with BudgetServer(s.budget, s.price, active_seconds=3.0) as server:
        other = RateLimiter(rpm=24, tpm=None, tasks=2, share_url=server.url, startup_seconds=0)
        slow = RateLimiter(rpm=24, tpm=None, tasks=2, share_url=server.url)
        other.delay(1)
        slow.delay(1)
        with slow.sending():  # its request, 5 s: past the server's 3 s since slow's booking reported
            time.sleep(5.0)
            other.delay(1)
            assert other.processes == 2  # slow still counts: the other keeps half the rate
        time.sleep(SHARE_REFRESH_SECONDS + 0.5)
        assert slow._heartbeat is None  # no request in flight: its reporting thread has ended
        time.sleep(3.0 - 0.5)  # slow's last report is now past the window
        other.delay(1)
        assert other.processes == 1  # and once it stopped sending, it drops out


def _cached_answers(settings, tmp_path, commit_seconds: str, window: str) -> tuple[int, int, list]:
    """Twelve distinct calls to the embedded model, 2 in flight, through a fresh response cache:
    (commits of the cache table, answers readable from it once ``complete`` returned, completions)."""
    from deltalake import DeltaTable

    path = tmp_path / f"cache-{commit_seconds}-{window}"
    local = settings.with_overrides(**{"spark.apwa.cache.path": str(path), "spark.apwa.cache.commitSeconds": commit_seconds,
                                       "spark.apwa.cache.maxUncommitted": window, "spark.apwa.llm.concurrency": "2"})
    tasks = [Task(agent.TEXT_TEMPLATE, f"Line {i}: {SCENE}", max_tokens=8) for i in range(12)]
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(LLMClient(local).complete(tasks)))
    worker.start()
    worker.join(timeout=300)  # a batch must not wait out commitSeconds: 3600 s would hang here
    assert not worker.is_alive(), "complete() waited for the commit interval instead of committing at the batch's end"
    ok = [c for c in out if c.status == "ok"]
    readable = len(ResponseCache(path).get_many(LLMClient(local).cache_keys(tasks))) if ok else 0
    return DeltaTable(str(path)).version() + 1, readable, out


def test_answers_arriving_within_cache_commit_seconds_share_one_commit_and_a_batch_commits_at_its_end(settings, tmp_path):
    commits, readable, out = _cached_answers(settings, tmp_path, "3600", "64")
    ok = sum(c.status == "ok" for c in out)
    assert ok >= 10, [c.error for c in out]
    assert readable == ok  # every ok answer is durable when complete() returns
    assert commits == 2  # the first answer at once (it creates the table), the other ok answers at the batch's end


def test_past_max_uncommitted_a_call_commits_without_waiting_out_the_interval(settings, tmp_path):
    commits, readable, out = _cached_answers(settings, tmp_path, "3600", "2")
    ok = sum(c.status == "ok" for c in out)
    assert ok >= 10, [c.error for c in out]
    assert readable == ok
    # the first answer commits alone; after it, a commit comes whenever more than 2 answers wait, so at
    # least (ok - 1) / (2 + 2 in flight) more commits, far more than the interval alone would allow (1)
    assert commits >= 1 + (ok - 1) // 4 and commits > 2
