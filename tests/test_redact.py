"""The redact executor agent's name finding (``find_names``): the model chooses among the
``name_candidates`` tool's strings, with the real embedded model; a faulty endpoint for the error path."""

from __future__ import annotations

import json

import pytest

from apwa_spark.plan import agents
from apwa_spark.plan.ir import REDACT_TOOLS
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint
from apwa_spark.tools import name_candidates

pytestmark = pytest.mark.model

ENTITIES = ["person", "email", "phone"]
TEXTS = [
    "We spoke with Maria Lopez this morning. Ms. Lopez wants the refund sent to maria.lopez@example.com.",
    "Ticket opened for Hans-Peter Weimer by the front desk. Phone: +49 30 1234567.",
    "The parcel left the depot on Monday.",
    None,
]


def test_tools_and_model_redact_names_and_their_parts(settings):
    results = agents.redact_rows(TEXTS, ENTITIES, list(REDACT_TOOLS), True, settings)
    maria, hans, parcel, null = results
    assert maria.status == "ok" and "Maria" not in maria.value and "Lopez" not in maria.value
    assert maria.value == "We spoke with [PERSON] this morning. Ms. [PERSON] wants the refund sent to [EMAIL]."
    assert maria.completion.calls == 1  # "Ms. Lopez" is spent once "Maria Lopez" is found
    assert hans.value == "Ticket opened for [PERSON] by the front desk. Phone: [PHONE]."
    assert {s.entity for s in hans.extra} == {"person", "phone"}
    # no candidate left once the rules took their spans: no call, text unchanged
    assert parcel.value == TEXTS[2] and parcel.completion.calls == 0 and parcel.status == "ok"
    assert null.status == "error" and null.completion.error_class == "NullInput" and null.completion.calls == 0


def test_each_found_name_is_a_candidate_and_is_booked_on_the_row(settings):
    from apwa_spark.llm.client import LLMClient

    text = "Customer Anna Schmidt called about the invoice. She asked that Pierre Dubois in Lyon be copied."
    options = name_candidates(text)
    [(names, completion)] = agents.find_names([text], [options], LLMClient(settings))
    assert names and set(names) <= set(options)
    assert completion.status == "ok" and json.loads(completion.text) == names
    assert 1 <= completion.calls <= agents.MAX_NAMES and completion.prompt_tokens > 0


def test_free_answers_count_only_when_the_text_contains_them(settings):
    """``model`` without a candidates tool: one free answer, kept only if it occurs verbatim."""
    from apwa_spark.llm.client import LLMClient

    texts = ["We spoke with Maria Lopez this morning.", "The parcel left the depot on time."]
    (maria, _), (nobody, c) = agents.find_names(texts, [None, None], LLMClient(settings))
    assert all(name in texts[0] for name in maria) and nobody == [] and c.calls == 1


def test_garbage_from_the_endpoint_is_an_error_row_not_a_half_redacted_text(settings, endpoint):
    with FaultyEndpoint(endpoint.base_url, non_json=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.maxRetries": "0"})
        [row] = agents.redact_rows([TEXTS[0]], ENTITIES, list(REDACT_TOOLS), True, local)
    assert row.status == "error" and row.value is None and row.completion.error_class == "MalformedResponse"


def test_a_splitter_tool_in_a_redact_step_is_a_clear_error():
    from apwa_spark.config import Settings

    settings = Settings.load(env={})
    with pytest.raises(ValueError, match=r"redact cannot use tool\(s\) \['chunk_text'\]"):
        agents.redact_rows(["text"], ENTITIES, ["pii_rules", "chunk_text"], False, settings)
