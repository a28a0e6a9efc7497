"""The server as a real subprocess spoken to in raw JSON lines: its exit status, stderr and signals are the test's."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
SERVER = [sys.executable, "-m", "server"]
START_S = 120.0
ANSWER_S = 5.0  # the answers measured here come within milliseconds; the bound only stops a hung test


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "SIGNAL_HUB_DATA_DIR": str(data_dir), "OPENAI_API_KEY": "", **extra}


def refusal(env: dict[str, str], command: list[str] = SERVER) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=START_S, stdin=subprocess.DEVNULL
    )


def assert_refused_in_one_line(run: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""  # stdout belongs to JSON-RPC
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("signal-hub-embeddings: ")
    for part in expected:
        assert part in lines[0]


class RawServer:
    """The server in a subprocess, spoken to in raw JSON lines, every read bounded in time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            SERVER, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stdout: queue.Queue[bytes] = queue.Queue()
        self.stderr: queue.Queue[bytes] = queue.Queue()
        assert self.process.stdout is not None and self.process.stderr is not None
        self.streams = (self.process.stdout, self.process.stderr)
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            for stream, lines in zip(self.streams, (self.stdout, self.stderr), strict=True)
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
        for line in stream:
            lines.put(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def request(self, request_id: int, method: str, params: dict[str, Any]) -> None:
        self.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))

    def answer(self, timeout: float = ANSWER_S) -> dict[str, Any]:
        return json.loads(self.stdout.get(timeout=timeout))  # queue.Empty after `timeout`: never answered

    def stderr_line(self, containing: str, timeout: float) -> str:
        while True:
            line = self.stderr.get(timeout=timeout).decode()
            if containing in line:
                return line

    def initialize(self) -> None:
        self.request(
            1,
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
        )
        assert self.answer(timeout=START_S)["id"] == 1
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def call(self, request_id: int, tool: str, timeout: float = ANSWER_S, **arguments: Any) -> dict[str, Any]:
        """A tools/call and its answer (other lines before it, e.g. notifications, are skipped)."""
        self.request(request_id, "tools/call", {"name": tool, "arguments": arguments})
        while "id" not in (answer := self.answer(timeout)) or answer["id"] != request_id:
            pass
        return answer

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        """The exit status, once the process has ended (and its output has been read to the end)."""
        status = self.process.wait(timeout=timeout)
        for pump in self.pumps:
            pump.join(timeout=10)
        return status

    def stderr_text(self) -> str:
        lines = []
        while not self.stderr.empty():
            lines.append(self.stderr.get_nowait().decode())
        return "".join(lines)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for pump in self.pumps:
                pump.join(timeout=10)
            for stream in self.streams:
                stream.close()
