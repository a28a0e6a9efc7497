"""Clients of a shared server: spend and a hard limit per client, and jobs by client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from providers import Budget, BudgetExceededError, CostLedger, EmbeddingResult, Settings
from providers.clients import NO_CLIENT, as_client, current_client
from providers.jobs.store import JobStore


def paid(usd: float) -> EmbeddingResult:
    return EmbeddingResult(
        vectors=np.zeros((1, 4), dtype=np.float32), provider="openai", model="m", tokens=10, cost_usd=usd
    )


def test_the_ledger_reports_spend_by_client(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    try:
        with as_client("alice"):
            ledger.record(paid(0.5))
            ledger.record(paid(0.25))
        with as_client("bob"):
            ledger.record(paid(1.0))
        ledger.record(paid(2.0))  # stdio, the CLI, Python: no client
        report = ledger.report()
    finally:
        ledger.close()
    assert {name: usage.usd for name, usage in report.by_client.items()} == {"alice": 0.75, "bob": 1.0, NO_CLIENT: 2.0}
    assert report.total_usd == 3.75 and current_client() is None


def test_each_client_has_its_own_hard_limit_inside_the_shared_one(tmp_path: Path) -> None:
    budget = Budget(hard_usd=10.0, hard_usd_per_client=1.0, period="all")
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    try:
        with as_client("alice"):
            held = ledger.reserve(0.6, budget)  # in flight: counts against alice too
            with pytest.raises(BudgetExceededError, match="SIGNAL_HUB_BUDGET_HARD_USD_PER_CLIENT") as refused:
                ledger.reserve(0.6, budget)
            assert "'alice'" in str(refused.value)
            ledger.settle(held, paid(0.6))
            with pytest.raises(BudgetExceededError, match="per-client"):
                ledger.reserve(0.5, budget)
        with as_client("bob"):
            ledger.release(ledger.reserve(0.9, budget))  # bob's limit is his own
        ledger.release(ledger.reserve(5.0, budget))  # no client: only the shared limit holds
        with as_client("carol"), pytest.raises(BudgetExceededError, match=r"SIGNAL_HUB_BUDGET_HARD_USD\b"):
            ledger.reserve(9.5, Budget(hard_usd=10.0, period="all"))
    finally:
        ledger.close()


def test_the_per_client_limit_is_read_from_the_environment() -> None:
    env = {"SIGNAL_HUB_BUDGET_HARD_USD_PER_CLIENT": "2.5"}
    assert Settings.from_env(env).budget.hard_usd_per_client == 2.5
    assert Settings.from_env({}).budget.hard_usd_per_client is None


def test_a_client_lists_only_its_own_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    fields = dict(
        input="in", output="out", format="jsonl", glob="*", provider="local", model="m", space="s", fingerprint="f"
    )
    try:
        with as_client("alice"):
            mine = store.create(**fields, total=1)
        with as_client("bob"):
            theirs = store.create(**fields, total=2)
            assert [job.id for job in store.list()] == [theirs.id]
        assert {job.id for job in store.list()} == {mine.id, theirs.id}  # the server itself sees every job
        assert mine.client == "alice" and theirs.client == "bob"
    finally:
        store.close()
