"""The one way our servers stop (server/shutdown.py), and the stdio transport's part in it, in memory."""

from __future__ import annotations

import functools
import io
import json
import os
import signal

import anyio
import pytest
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from providers import Settings
from server.shutdown import Shutdown, serve_until_stopped
from server.transports.stdio import SHUTTING_DOWN, _AnsweredWriter, _AnsweringReader, serve_stdio
from tests.test_server import fake_server

pytestmark = pytest.mark.anyio


def quiet(grace_s: float = 2.0) -> tuple[Shutdown, list[str]]:
    said: list[str] = []
    return Shutdown(grace_s, say=said.append), said


async def test_the_first_reason_to_stop_wins_and_is_said_once() -> None:
    shutdown, said = quiet()
    assert not shutdown.stopping
    shutdown.request("SIGINT")
    shutdown.request("SIGTERM")  # 100 ms later, from the same host
    assert shutdown.reason == "SIGINT" and shutdown.requested.is_set()
    assert said == ["stopping (SIGINT)"]


async def test_drained_waits_for_the_calls_in_flight() -> None:
    shutdown, said = quiet()
    shutdown.call_started(1)
    shutdown.call_started(2)
    shutdown.request("SIGTERM")
    assert said == ["stopping (SIGTERM); 2 call(s) in flight get 2 s"]
    finished: list[int] = []

    async def drain() -> None:
        await shutdown.drained()
        finished.append(shutdown.in_flight)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drain)
            await anyio.wait_all_tasks_blocked()
            shutdown.call_finished(1)
            await anyio.wait_all_tasks_blocked()
            assert finished == []  # one is still running
            with shutdown.call(3):  # a transport that sees a call's whole life
                assert shutdown.in_flight == 2
            shutdown.call_finished(2)
    assert finished == [0] and shutdown.cut == 0


async def test_calls_still_running_when_the_grace_is_over_are_cut() -> None:
    shutdown, said = quiet(grace_s=0)
    shutdown.call_started("slow")
    shutdown.request("stdin closed")
    with anyio.fail_after(5):
        await shutdown.drained()
        await shutdown.drained()  # a second waiter returns too, and nothing is said twice
    assert shutdown.cut == 1
    assert said[-1] == "1 call(s) still running after 0 s are cancelled"


async def test_sigint_then_sigterm_ask_to_stop_once_and_serve_returns() -> None:
    seen: list[str | None] = []

    async def serve(shutdown: Shutdown) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        await shutdown.drained()
        seen.append(shutdown.reason)

    with anyio.fail_after(5):
        shutdown = await serve_until_stopped(serve)
    assert seen == ["SIGINT"] and shutdown.reason == "SIGINT"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back once served


async def test_a_process_about_to_exit_ignores_a_late_sigterm_once_stopped() -> None:
    # Claude Code's SIGTERM comes 100 ms after its SIGINT: a stop done sooner must not be killed by it.
    async def serve(shutdown: Shutdown) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await shutdown.drained()

    try:
        with anyio.fail_after(5):
            await serve_until_stopped(serve, ignore_once_stopped=True)
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def request(request_id: int, method: str = "tools/call") -> SessionMessage:
    return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method, params={}))


async def test_stdio_counts_requests_in_flight_until_answered_and_refuses_new_ones_once_stopping() -> None:
    shutdown, _ = quiet()
    inbound_send, inbound = anyio.create_memory_object_stream[SessionMessage | Exception](10)
    answers_send, answers = anyio.create_memory_object_stream[SessionMessage](10)
    reader = _AnsweringReader(inbound, answers_send, shutdown)
    writer = _AnsweredWriter(answers_send, shutdown)
    with inbound_send, inbound, answers_send, answers, anyio.fail_after(5):
        await inbound_send.send(request(1))
        await inbound_send.send(request(2))
        assert (await reader.receive()).message.id == 1  # type: ignore[union-attr]
        assert (await reader.receive()).message.id == 2  # type: ignore[union-attr]
        assert shutdown.in_flight == 2

        await writer.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={})))
        cancelled = JSONRPCNotification(
            jsonrpc="2.0", method="notifications/cancelled", params={"requestId": 2, "reason": "user"}
        )
        await inbound_send.send(SessionMessage(cancelled))
        assert (await reader.receive()).message.method == "notifications/cancelled"  # type: ignore[union-attr]
        assert shutdown.in_flight == 0  # answered, or cancelled by the client: no answer will come
        assert (await answers.receive()).message.id == 1  # type: ignore[union-attr]

        shutdown.request("SIGINT")
        await inbound_send.send(request(3))
        ping = SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={}))
        await inbound_send.send(ping)
        assert (await reader.receive()) is ping  # notifications still pass; request 3 was answered
        refusal = (await answers.receive()).message
    assert isinstance(refusal, JSONRPCError) and refusal.id == 3
    assert refusal.error.code == SHUTTING_DOWN
    assert refusal.error.message == "the server is shutting down (SIGINT); start a new session to call it again."
    assert shutdown.in_flight == 0


class Wire:
    """Two pipes standing in for a host: what it writes is the server's stdin, what it reads its stdout."""

    def __init__(self) -> None:
        self.server_in, self.host_out = os.pipe()
        self.host_in, self.server_out = os.pipe()
        self.stdout = anyio.wrap_file(io.TextIOWrapper(os.fdopen(self.server_out, "wb"), encoding="utf-8"))

    def send(self, message: dict[str, object]) -> None:
        os.write(self.host_out, (json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())

    async def answers(self) -> list[dict[str, object]]:
        """Every line the server wrote, once it has finished."""
        await self.stdout.aclose()
        with os.fdopen(self.host_in, "rb") as read:
            return [json.loads(line) for line in read.read().splitlines()]

    def end_input(self) -> None:
        if self.host_out >= 0:
            os.close(self.host_out)
            self.host_out = -1

    def close(self) -> None:
        self.end_input()
        os.close(self.server_in)  # the server never closes it: its reading thread may still hold it


INITIALIZE = {
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


async def test_stdin_ending_drains_the_call_in_flight_then_the_session_ends(settings: Settings) -> None:
    wire = Wire()
    shutdown, said = quiet()
    try:
        wire.send(INITIALIZE)
        wire.send({"method": "notifications/initialized"})
        wire.send({"id": 2, "method": "tools/call", "params": {"name": "embed_text", "arguments": {"text": "x"}}})
        wire.end_input()  # the host is gone; its last call is still answered
        with anyio.fail_after(30):
            await serve_stdio(fake_server(settings), None, shutdown, wire=(wire.server_in, wire.stdout))
        answers = {answer["id"]: answer for answer in await wire.answers()}
    finally:
        wire.close()
    assert said[0].startswith("stopping (stdin closed)")
    assert "result" in answers[2] and answers[2]["result"]["structuredContent"]["dimensions"] == 8  # type: ignore[index]


async def test_a_stop_asked_for_while_stdin_stays_open_ends_the_session(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = Wire()
    shutdown, said = quiet()

    try:
        wire.send(INITIALIZE)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(
                    functools.partial(
                        serve_stdio, fake_server(settings), "ready", shutdown, wire=(wire.server_in, wire.stdout)
                    )
                )
                await anyio.sleep(0)  # the server starts; stdin stays open throughout
                shutdown.request("SIGINT")
        answers = await wire.answers()
    finally:
        wire.close()
    assert said == ["stopping (SIGINT)"]
    assert capsys.readouterr().err.splitlines()[0] == "ready"
    assert [answer.get("id") for answer in answers] in ([], [1])  # initialize, if it was read in time
