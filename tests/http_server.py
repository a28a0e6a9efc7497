"""`signal-hub-embeddings serve --transport http` as a real subprocess on loopback, for tests and benchmarks.

    with HttpServer(data_dir, tokens={"alice": "a" * 24}) as server:
        async with server.client("alice") as client:   # a real mcp.Client over streamable HTTP
            await client.call_tool("embed_text", {"text": "x"})
        server.stop()                                  # SIGTERM; returns the exit status

The server listens on a port it picks (`--port 0`) and says which in its ready line on stderr.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ROOT = Path(__file__).resolve().parents[1]
_READY = re.compile(r"ready on (http://\S+/mcp)")


class HttpServer:
    """One server process; every wait is bounded by `start_timeout_s`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        tokens: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 180.0,
        wait_ready: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.tokens = dict(tokens or {})
        self._env = dict(env or {})
        self._timeout = start_timeout_s
        self._wait_ready = wait_ready
        self.log = data_dir / "server.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")

    def __enter__(self) -> HttpServer:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OPENAI_API_KEY": "",
            "SIGNAL_HUB_DATA_DIR": str(self.data_dir),
            "PYTHONPATH": str(ROOT),
            **self._env,
        }
        if self.tokens:
            path = self.data_dir / "tokens.txt"
            path.write_text("".join(f"{name}:{token}\n" for name, token in self.tokens.items()))
            env["SIGNAL_HUB_HTTP_TOKENS_FILE"] = str(path)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--transport", "http", "--port", "0"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + self._timeout
        while not self.url:
            found = _READY.search(self.stderr)
            if found:
                self.url = found.group(1)
            elif self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server did not start: {self.stderr[-2000:]}")
            else:
                time.sleep(0.05)
        if self._wait_ready:
            self.wait_healthy(deadline)
        return self

    def wait_healthy(self, deadline: float) -> None:
        while httpx2.get(f"{self.base}/healthz", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server never became ready (/healthz)")
            time.sleep(0.1)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send `sig` and wait (bounded) for the exit status; a server that hangs is killed."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        return process.returncode

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def headers(self, client: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[client]}"} if client else {}

    @asynccontextmanager
    async def client(self, name: str | None = None, **options: object) -> AsyncIterator[Client]:
        """A real MCP client over streamable HTTP, with `name`'s token."""
        async with (
            create_mcp_http_client(headers=self.headers(name)) as http,
            Client(streamable_http_client(self.url, http_client=http), **options) as client,  # type: ignore[arg-type]
        ):
            yield client
