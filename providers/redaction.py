"""What a provider tells us, made safe to show and to store: secrets redacted, length cut. The one place.

Every `EmbeddingError` message passes through `safe_message` when it is made, so whatever an
upstream body or header put in it (a server echoing the `Authorization` header, a 200 KB error
page) never reaches a log, an answer, stderr or a database whole:

- *redact*: the API keys this process knows (`add_secret`, and every `*_API_KEY`, `*_TOKEN`,
  `*_SECRET` variable of the environment), and anything shaped like a credential (`Bearer …`,
  `sk-…`, `"api_key": …`), become `[redacted]`;
- *cut*: a message over `MAX_MESSAGE_CHARS` keeps its beginning (what failed) and its end (what
  to do) and drops the middle, saying how much.

Text that does not become an exception (a Batch API output line's error, a stored job error)
goes through `safe_message` too; `scrub_column` cleans what older versions stored.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping

__all__ = ["MAX_MESSAGE_CHARS", "REDACTED", "add_secret", "cut", "redact", "safe_message", "scrub_column"]

REDACTED = "[redacted]"
MAX_MESSAGE_CHARS = 1_000
"""About 250 tokens: a message says what failed and what to do, not the server's whole answer."""
_TAIL_CHARS = 240
"""Of a cut message, the end kept: where our advice (what to do) is."""
# Shorter values are not treated as secrets: "none" or "x" would redact ordinary words.
_MIN_SECRET = 8
_SECRET_VARIABLE = re.compile(r"(API_KEY|_TOKEN|_SECRET|_PASSWORD)$")
_CREDENTIALS = (
    # An Authorization header echoed back: `Bearer sk-…`, `Basic dXNlcjpwYXNz`.
    (re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1\2{REDACTED}"),
    # OpenAI-style keys anywhere (sk-…, sk-proj-…), known to this process or not.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), REDACTED),
    # `"api_key": "…"`, `x-api-key: …`, `authorization=…` in a JSON body or a header dump.
    (
        re.compile(
            r"""((?:api[_-]?key|x-api-key|authorization|access[_-]?token|secret)["']?\s*[:=]\s*["']?)"""
            r"""(?!\[redacted\])[^\s"',;}]{4,}""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
)

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Never show `value` (an API key given in code rather than in the environment)."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def _known_secrets(environ: Mapping[str, str]) -> list[str]:
    found = set(_secrets)
    found.update(v for k, v in environ.items() if _SECRET_VARIABLE.search(k.upper()) and len(v) >= _MIN_SECRET)
    return sorted(found, key=len, reverse=True)  # a key that contains another goes first


def redact(text: str, secrets: Iterable[str] = (), *, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every known secret, and anything shaped like a credential, replaced by `[redacted]`."""
    for secret in [*secrets, *_known_secrets(os.environ if environ is None else environ)]:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` at most `limit` characters: its beginning and its end, the middle dropped and counted."""
    if len(text) <= limit:
        return text
    tail = min(_TAIL_CHARS, limit // 4)
    marker = f" […{len(text) - limit:,} characters cut…] "
    head = max(0, limit - tail - len(marker))
    return f"{text[:head].rstrip()}{marker}{text[len(text) - tail :].lstrip()}"[:limit]


def safe_message(text: str, secrets: Iterable[str] = ()) -> str:
    """Redacted, then cut: the form in which anything a provider said may be shown or stored."""
    # Redact first: a cut through a key would leave a piece of it that no longer matches.
    return cut(redact(text, secrets))


def scrub_column(
    db: sqlite3.Connection, table: str, column: str, *, keys: tuple[str, ...] = ("rowid",), json_list: bool = False
) -> int:
    """Rewrite the values of `table.column` (or each string of a JSON list) in their safe form; returns rows changed.

    For databases written by versions that stored provider messages as they came. `keys` name a
    row (its primary key, for a table without rowid).
    """
    names = ", ".join(keys)
    rows = db.execute(f"SELECT {column}, {names} FROM {table} WHERE {column} IS NOT NULL").fetchall()
    changed = [(clean, *key) for value, *key in rows if (clean := _clean(value, json_list)) != value]
    if changed:
        where = " AND ".join(f"{key} = ?" for key in keys)
        # The old values must not linger in freed pages or in the write-ahead log either.
        (secure,) = db.execute("PRAGMA secure_delete").fetchone()
        db.execute("PRAGMA secure_delete = ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"UPDATE {table} SET {column} = ? WHERE {where}", changed)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute(f"PRAGMA secure_delete = {int(secure)}")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(changed)


def _clean(value: object, json_list: bool) -> object:
    if not isinstance(value, str):
        return value
    if not json_list:
        return safe_message(value)
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list):  # not what was expected: cleaned as text
        return safe_message(value)
    cleaned = [safe_message(item) if isinstance(item, str) else item for item in items]
    return value if cleaned == items else json.dumps(cleaned)
