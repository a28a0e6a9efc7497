"""The persistent cost ledger and budgets: restarts, several processes, concurrent reservations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from providers import Budget, BudgetExceededError, ConfigurationError, CostLedger, EmbeddingResult

ROOT = Path(__file__).resolve().parents[1]


def result(
    provider: str = "openai",
    model: str = "text-embedding-3-small",
    tokens: int = 1000,
    usd: float | None = 0.00002,
    count: int = 2,
) -> EmbeddingResult:
    return EmbeddingResult(
        vectors=np.zeros((count, 4), dtype=np.float32), provider=provider, model=model, tokens=tokens, cost_usd=usd
    )


def test_totals_survive_a_restart_and_separate_sessions(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = CostLedger(path, session="first")
    first.record(result(tokens=1000, usd=0.00002))
    first.record(result(provider="local", model="all-MiniLM-L6-v2", tokens=50, usd=0.0, count=3))
    first.close()

    second = CostLedger(path, session="second")
    second.record(result(model="text-embedding-3-large", tokens=2000, usd=0.00026))
    everything = second.report()
    assert everything.total_usd == pytest.approx(0.00028)
    assert everything.total.embeddings == 7 and everything.total.requests == 3
    assert set(everything.by_provider) == {"openai", "local"}
    assert everything.by_model["text-embedding-3-large"].tokens == 2000
    assert second.report(session="second").total_usd == pytest.approx(0.00026)
    assert second.report(session="first").by_provider["local"].embeddings == 3


def test_totals_since_a_date_leave_out_older_calls(tmp_path: Path) -> None:
    clock = iter([datetime(2026, 1, 5, tzinfo=UTC).timestamp(), datetime(2026, 3, 5, tzinfo=UTC).timestamp()])
    ledger = CostLedger(tmp_path / "l.sqlite3", now=lambda: next(clock))
    ledger.record(result(usd=1.0))
    ledger.record(result(usd=2.0))
    assert ledger.report(since=datetime(2026, 2, 1, tzinfo=UTC)).total_usd == 2.0
    assert ledger.report().total_usd == 3.0


def test_unknown_prices_are_counted_apart_not_as_zero(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "l.sqlite3")
    ledger.record(result(model="mystery", tokens=500, usd=None))
    report = ledger.report()
    assert report.total_usd == 0.0
    assert report.by_model["mystery"].unpriced_tokens == 500


def test_the_hard_limit_refuses_before_spending_and_names_limit_and_spend(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "l.sqlite3")
    budget = Budget(hard_usd=1.0, period="all")
    ledger.record(result(usd=0.75))
    ok = ledger.reserve(0.2, budget)
    with pytest.raises(
        BudgetExceededError, match=r"\$0\.750000 is spent.*\$0\.200000 more is reserved.*hard limit of \$1\.000000"
    ):
        ledger.reserve(0.1, budget)
    ledger.release(ok)
    ledger.settle(ledger.reserve(0.1, budget), result(usd=0.09))
    assert ledger.report().total_usd == pytest.approx(0.84)


def test_free_calls_are_never_refused_by_the_budget(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "l.sqlite3")
    ledger.record(result(usd=5.0))
    assert ledger.reserve(0.0, Budget(hard_usd=1.0, period="all")).warning is None


def test_the_soft_limit_warns_but_lets_the_call_through(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "l.sqlite3")
    ledger.record(result(usd=0.9))
    reservation = ledger.reserve(0.2, Budget(soft_usd=1.0, period="all"))
    assert reservation.warning is not None and "past the soft limit of $1.000000" in reservation.warning


def test_budget_periods_count_only_their_own_spend(tmp_path: Path) -> None:
    times = iter(
        [datetime(2026, 10, 31, 23, tzinfo=UTC).timestamp()] + [datetime(2026, 11, 2, 1, tzinfo=UTC).timestamp()] * 10
    )
    ledger = CostLedger(tmp_path / "l.sqlite3", session="s", now=lambda: next(times))
    ledger.record(result(usd=0.9))  # last month
    ledger.reserve(0.5, Budget(hard_usd=1.0, period="month"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(0.5, Budget(hard_usd=1.0, period="all"))


def test_a_bad_period_is_a_configuration_error() -> None:
    with pytest.raises(Exception, match="budget period 'week'"):
        Budget(period="week")


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from providers import CostLedger, EmbeddingResult
    ledger = CostLedger(Path(sys.argv[1]), session=sys.argv[2])
    for i in range(int(sys.argv[3])):
        ledger.record(EmbeddingResult(vectors=np.zeros((1, 2), dtype=np.float32), provider="openai",
                                      model="text-embedding-3-small", tokens=7, cost_usd=0.25))
    """
)


@pytest.mark.slow
def test_eight_processes_writing_at_once_sum_exactly(tmp_path: Path) -> None:
    path, writes = tmp_path / "shared.sqlite3", 150
    CostLedger(path).close()  # create the schema once, as the first server would
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"p{i}", str(writes)], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for i in range(8)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, errors
    assert not any("locked" in e for e in errors)
    report = CostLedger(path).report()
    assert report.total.requests == 8 * writes
    assert report.total.tokens == 8 * writes * 7
    assert report.total_usd == 8 * writes * 0.25  # quarters add up exactly in binary floating point


def test_an_unusable_data_directory_is_a_clear_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the data directory should be")
    with pytest.raises(
        ConfigurationError,
        match=r"cannot open the cost ledger at .*not-a-dir is a file, not a directory; set SIGNAL_HUB_DATA_DIR",
    ):
        CostLedger(tmp_path / "not-a-dir" / "ledger.sqlite3")
