"""Which unreadable request lines get an answer, and what it says (the process-level test is in test_startup)."""

from __future__ import annotations

import anyio
import mcp_types
import pytest
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCError, JSONRPCRequest
from pydantic import ValidationError

from server.shutdown import Shutdown
from server.transports.stdio import _AnsweringReader, answer_unreadable

pytestmark = pytest.mark.anyio


def read_error(line: str) -> ValidationError:
    """What the SDK's stdio reader puts on the read stream for `line`."""
    with pytest.raises(ValidationError) as caught:
        mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    return caught.value


def call(arguments: str, request_id: str = "7") -> str:
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"embed_text","arguments":{arguments}}}}}'
    )


@pytest.mark.parametrize(
    ("line", "code", "says"),
    [
        (call('{"text":"\\ud800"}'), -32602, "params.arguments.text holds a lone surrogate escape (\\ud800)"),
        (call('{"text":"ok \\udfff"}', '"req-1"'), -32602, "params.arguments.text holds a lone surrogate"),
        (call('{"texts":["a","b\\ud83d"]}'), -32602, "params.arguments.texts[1] holds"),
        ('{"jsonrpc":"2.0","id":7,"method":"x\\ud800"}', -32700, "method holds a lone surrogate"),
        ('{"jsonrpc":"2.0","id":7,"method":5}', -32600, "not a valid JSON-RPC request: method: Input should be"),
        ('{"id":7,"method":"tools/list"}', -32600, "jsonrpc: Field required"),
    ],
)
def test_a_request_with_a_readable_id_gets_an_error_naming_the_problem(line: str, code: int, says: str) -> None:
    answer = answer_unreadable(read_error(line))
    assert isinstance(answer, JSONRPCError)
    assert answer.id in (7, "req-1")
    assert answer.error.code == code
    assert says in answer.error.message
    answer.model_dump_json()  # the answer itself is valid UTF-8: it never echoes the surrogate


@pytest.mark.parametrize(
    "line",
    [
        '{"jsonrpc":"2.0","method":"notifications/x","params":{"a":"\\ud800"}}',  # a notification: no answer due
        '{"jsonrpc":"2.0","id":"\\ud800","method":"x"}',  # an id that cannot be echoed
        '{"jsonrpc":"2.0","id":true,"method":"x","params":"\\ud800"}',  # not an id at all
        '{"jsonrpc":"2.0","id":3,"meth',  # cut short: nothing can be trusted
        "[1, 2]",
        '{"jsonrpc":"2.0","id":3,"result":"\\ud800"}',  # a response: nobody waits for an answer to it
    ],
)
def test_a_line_without_a_request_id_to_answer_gets_none(line: str) -> None:
    assert answer_unreadable(read_error(line)) is None


def test_exceptions_that_are_not_validation_errors_get_no_answer() -> None:
    assert answer_unreadable(ValueError("boom")) is None


async def test_the_reader_answers_unreadable_lines_and_passes_the_rest_on() -> None:
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](10)
    answers_send, answers = anyio.create_memory_object_stream[SessionMessage](10)
    good = SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=2, method="tools/list"))
    for item in (read_error(call('{"text":"\\ud800"}')), read_error("[1]"), good):
        incoming_send.send_nowait(item)
    incoming_send.close()

    async with _AnsweringReader(incoming, answers_send, Shutdown()) as reader:
        with anyio.fail_after(5):
            received = [item async for item in reader]
    assert received == [good]
    answer = answers.receive_nowait().message
    assert isinstance(answer, JSONRPCError) and answer.id == 7
    with pytest.raises(anyio.WouldBlock):
        answers.receive_nowait()  # "[1]" had nothing to answer
    answers_send.close()
    answers.close()
