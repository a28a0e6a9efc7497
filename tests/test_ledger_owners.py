"""Budget reservations belong to a live ledger: a process killed while holding one does not hold it for long."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from providers import Budget, BudgetExceededError, CostLedger

ROOT = Path(__file__).resolve().parents[1]
BUDGET = Budget(hard_usd=1.0, period="all")

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from providers import Budget, CostLedger
    ledger = CostLedger(Path(sys.argv[1]))
    ledger.reserve(0.6, Budget(hard_usd=1.0, period="all"))
    print("reserved", flush=True)
    time.sleep(600)  # a long OpenAI call, until it is killed
    """
)


def held_usd(path: Path) -> float:
    with sqlite3.connect(path) as db:
        return float(db.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations").fetchone()[0])


@pytest.mark.slow
def test_a_killed_process_s_reservation_is_released_when_the_next_ledger_starts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "reserved"  # bounded: the holder dies within 600 s regardless

        # While the holder lives, its reservation counts: another process cannot spend it.
        alive_meanwhile = CostLedger(path)
        with pytest.raises(BudgetExceededError, match=r"\$0\.600000 more is reserved"):
            alive_meanwhile.reserve(0.6, BUDGET)
        alive_meanwhile.close()
        assert held_usd(path) == pytest.approx(0.6)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()  # type: ignore[union-attr]

    next_process = CostLedger(path)  # starting is enough: nothing waits an hour any more
    assert held_usd(path) == 0.0
    next_process.reserve(0.6, BUDGET)
    next_process.close()


def test_a_reservation_of_a_ledger_that_died_after_ours_started_is_released_before_refusing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ours, theirs = CostLedger(path), CostLedger(path)
    theirs.reserve(0.6, BUDGET)
    theirs._owner.release()  # what the OS does to the lock of a process that dies; its row stays behind
    assert ours.reserve(0.6, BUDGET).usd == 0.6
    ours.close()


def test_a_live_ledger_s_reservations_are_never_released_by_another(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = CostLedger(path)
    first.reserve(0.6, BUDGET)
    second = CostLedger(path)
    assert second.release_dead_owners() == 0
    with pytest.raises(BudgetExceededError):
        second.reserve(0.6, BUDGET)
    first.close()  # a clean close takes its reservations with it
    assert second.reserve(0.6, BUDGET).usd == 0.6
    second.close()


def test_reservations_from_before_owners_still_expire_after_an_hour(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:  # the old schema, as an older version left it
        db.execute("CREATE TABLE reservations (id TEXT PRIMARY KEY, at REAL NOT NULL, usd REAL NOT NULL)")
        db.execute("INSERT INTO reservations VALUES ('old', ?, 0.6)", (time.time(),))
    now = [time.time()]
    ledger = CostLedger(path, now=lambda: now[0])
    with pytest.raises(BudgetExceededError):
        ledger.reserve(0.6, BUDGET)
    now[0] += 3601
    assert ledger.reserve(0.6, BUDGET).usd == 0.6
    ledger.close()


def test_lock_files_of_ledgers_that_died_without_reservations_are_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    owners = path.with_name(path.name + ".owners")
    owners.mkdir()
    stale = owners / "0123.lock"
    stale.touch()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    ledger = CostLedger(path)
    assert not stale.exists()
    assert [p.name for p in owners.iterdir()] == [f"{ledger._owner.id}.lock"]
    ledger.close()
    assert list(owners.iterdir()) == []
