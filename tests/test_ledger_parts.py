"""The ledger's per-request records: a call's pieces, its reservation, and estimated tokens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from providers import Budget, CostLedger, EmbeddingResult


def piece(tokens: int, count: int, *, usd: float, estimated: bool = False) -> EmbeddingResult:
    vectors = np.ones((count, 2), dtype=np.float32)
    return EmbeddingResult(vectors, "openai", "m", tokens, tokens_estimated=estimated, cost_usd=usd)


def test_each_part_is_taken_off_the_reservation_and_the_settle_adds_only_the_rest(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    budget = Budget(hard_usd=1.0)
    reservation = ledger.reserve(0.9, budget)
    ledger.record_part(reservation, piece(10, 2, usd=0.5))
    # 0.5 is spent and only 0.4 still held: a call of 0.05 fits under the hard limit (0.5 + 0.9 would not).
    ledger.release(ledger.reserve(0.05, budget))
    ledger.settle(reservation, piece(0, 3, usd=0.0), cached=1, embeddings=1)
    total = ledger.report().total
    assert (total.tokens, total.requests, total.embeddings, total.usd, total.cached) == (10, 2, 3, 0.5, 1)
    ledger.close()


def test_estimated_tokens_are_reported_apart(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    ledger.record(piece(7, 1, usd=0.0, estimated=True))
    ledger.record(piece(5, 1, usd=0.0))
    report = ledger.report()
    assert (report.total.tokens, report.total.estimated_tokens) == (12, 7)
    ledger.close()


def test_a_ledger_from_before_estimated_tokens_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE calls (id INTEGER PRIMARY KEY, at REAL NOT NULL, session TEXT NOT NULL,"
            " provider TEXT NOT NULL,"
            " model TEXT NOT NULL, tokens INTEGER NOT NULL, requests INTEGER NOT NULL, embeddings INTEGER NOT NULL,"
            " usd REAL, cached INTEGER NOT NULL DEFAULT 0, saved_usd REAL NOT NULL DEFAULT 0)"
        )
        old.execute("INSERT INTO calls VALUES (1, 0, 's', 'openai', 'm', 3, 1, 1, 0.25, 0, 0)")
    old.close()
    ledger = CostLedger(path)
    ledger.record(piece(4, 1, usd=0.0, estimated=True))
    total = ledger.report().total
    assert (total.tokens, total.estimated_tokens, total.usd) == (7, 4, pytest.approx(0.25))
    ledger.close()
