"""Whatever arrives, the live receiver answers 204 or a 4xx that names the fault: never a 5xx."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bodies import sample_event

PATH = "/realTimeTranscriptionEvents"
JSON = {"Content-Type": "application/json"}
# One live receiver serves all examples of a test: the property is about any request.
EXAMPLES = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "eventType",
    "accountId",
    "applicationId",
    "callId",
    "eventTime",
    "from",
    "to",
    "cause",
    "answerTime",
    "startTime",
    "tag",
    "errorMessage",
    "realTimeTranscription",
    "transcription",
]
INNER = ["id", "name", "tracks", "duration", "stabilized", "startTime", "status", "completedTime"]
KINDS = ["started", "stopped", "rejected", "available"]


@pytest.fixture
async def guarded(start_receiver: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await start_receiver(basic_auth="bandwidth:s3cret")
    return client


async def _post(client: TestClient[Any, Any], body: bytes, headers: dict[str, str]) -> int:
    resp = await client.post(PATH, data=body, headers=headers)
    answer = await resp.read()
    if resp.status == 400:
        fault = msgspec.json.decode(answer)
        assert fault["error"]
        assert fault["path"].startswith("$")
    return resp.status


@EXAMPLES
@given(body=st.binary(max_size=1024))
async def test_any_bytes(receiver: TestClient[Any, Any], body: bytes) -> None:
    assert await _post(receiver, body, JSON) in {204, 400}


@EXAMPLES
@given(value=json_values)
async def test_any_json(receiver: TestClient[Any, Any], value: Any) -> None:
    assert await _post(receiver, msgspec.json.encode(value), JSON) in {204, 400}


@EXAMPLES
@given(
    kind=st.sampled_from(KINDS),
    field=st.sampled_from(FIELDS),
    inner=st.sampled_from(INNER),
    value=json_values,
    nested=st.booleans(),
    delete=st.booleans(),
)
async def test_an_event_with_one_field_changed(
    receiver: TestClient[Any, Any],
    kind: str,
    field: str,
    inner: str,
    value: Any,
    nested: bool,
    delete: bool,
) -> None:
    event = sample_event(kind)
    target = event["realTimeTranscription"] if nested else event
    key = inner if nested else field
    if delete:
        target.pop(key, None)
    else:
        target[key] = value
    assert await _post(receiver, msgspec.json.encode(event), JSON) in {204, 400}


@EXAMPLES
@given(
    authorization=st.text(
        # What a client can put in a header: printable Latin-1 (aiohttp refuses controls).
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=80,
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x+json", ""]),
)
async def test_any_authorization_and_content_type(
    guarded: TestClient[Any, Any], authorization: str, content_type: str
) -> None:
    headers = {"Authorization": authorization, "Content-Type": content_type}
    body = msgspec.json.encode(sample_event("stopped"))
    assert await _post(guarded, body, headers) in {204, 401, 415}
