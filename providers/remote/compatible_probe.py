"""What a `compatible` server has shown of itself, and how far its answers can be taken at their word.

`FactStore` keeps, per base URL and model, in `compatible.json` under the data directory:

- the vector length (so a restart with the server down still finds the cached vectors; the
  first real answer checks it);
- the form of the URL that answered (with or without `/v1`, when the configured one was 404);
- the input limit the server states (TEI's `/info` `max_input_length`; a `/models` entry's
  `max_input_length`, `max_model_len` or `max_seq_length`, as infinity and vLLM report).

The rest are pure checks: whether the model that answered is the one asked for, and whether the
usage a server reports is plausibly tokens (infinity reports characters).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import openai

    from providers.text.tokens import Tokenizer

__all__ = [
    "STATE_FILE",
    "AnswerChecks",
    "FactStore",
    "ServerFacts",
    "endpoint_label",
    "other_route",
    "over_limit",
    "plausible_usage",
    "same_model",
    "stated_limit",
    "truncation_unknown",
]

logger = logging.getLogger("providers.compatible")

STATE_FILE = "compatible.json"
"""What was learnt of each compatible server, under the data directory."""
_LIMIT_KEYS = ("max_input_length", "max_model_len", "max_seq_length", "max_input_tokens")
# Usage further than this factor from our own count (plus a margin for short texts) is not tokens
# as we count them: another tokenizer differs by well under it, characters by about 4x.
_USAGE_FACTOR = 2.5
_USAGE_MARGIN = 8
# Characters from which a text may pass the smallest window common servers have (256 tokens).
_MAYBE_CUT_CHARS = 1024


@dataclass(frozen=True)
class ServerFacts:
    """What a server at one base URL has shown, serving one model."""

    dimensions: int | None = None
    base_url: str | None = None
    """The URL form that answered, when it is not the configured one."""
    input_limit: int | None = None
    """Tokens (the server's own) a text may have before the server cuts it, as it states it."""


class FactStore:
    """`ServerFacts` of one base URL and model, in a small JSON file shared by every process."""

    def __init__(self, directory: Path | None, base_url: str, model: str) -> None:
        self.path = directory / STATE_FILE if directory is not None else None
        self._key = f"{base_url.rstrip('/')} {model}"

    def load(self) -> ServerFacts:
        found = self._read().get(self._key)
        if not isinstance(found, Mapping):
            return ServerFacts()
        return ServerFacts(
            dimensions=_positive(found.get("dimensions")),
            base_url=found["base_url"] if isinstance(found.get("base_url"), str) else None,
            input_limit=_positive(found.get("input_limit")),
        )

    def update(self, **changes: Any) -> ServerFacts:
        """Save `changes` over what is stored; a file that cannot be written is not an error (said once)."""
        facts = replace(self.load(), **changes)
        if self.path is None:
            return facts
        everything = self._read()
        everything[self._key] = asdict(facts)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole and renamed, so a reader in another process never sees half a file.
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".compatible-", suffix=".json")
            with os.fdopen(handle, "w") as out:
                json.dump(everything, out, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("cannot keep what was learnt of the server in %s (%s)", self.path, exc)
        return facts

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: learnt again from the server
        return data if isinstance(data, dict) else {}


def endpoint_label(base_url: str) -> str:
    """host[:port], and the path but for a final /v1 (two gateways on one host are two spaces)."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    path = parts.path.rstrip("/").removesuffix("/v1")
    return (f"{host}:{parts.port}" if parts.port else host) + path


def truncation_unknown(label: str, texts: Sequence[str]) -> str | None:
    """What a result says when the server states no input limit and some text may be over it."""
    long = sum(1 for text in texts if len(text) > _MAYBE_CUT_CHARS)
    if not long:
        return None
    return (
        f"truncation unknown: {label} does not state its input limit, so {long} long text(s) may have been "
        "cut by the server without `truncated` saying so."
    )


def other_route(base_url: str) -> str:
    """The same server with the `/v1` prefix added or taken away (servers differ on it)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1") if path.endswith("/v1") else f"{path}/v1"
    return urlunsplit(parts._replace(path=path))


async def stated_limit(sdk: openai.AsyncOpenAI, base_url: str, model: str, *, timeout: float) -> int | None:
    """The input limit the server states (TEI `/info`, else a `/models` entry), or None if it states none."""
    import openai

    parts = urlsplit(base_url)
    root = urlunsplit(parts._replace(path=parts.path.rstrip("/").removesuffix("/v1")))
    for url in (f"{root}/info", f"{base_url.rstrip('/')}/models"):
        try:
            found: object = await sdk.get(url, cast_to=object, options={"timeout": timeout, "max_retries": 0})
        except (openai.APIError, ValueError, TypeError):
            continue  # not this kind of server
        if (limit := _limit_in(found, model)) is not None:
            return limit
    return None


def _limit_in(found: object, model: str) -> int | None:
    if not isinstance(found, Mapping):
        return None
    for key in _LIMIT_KEYS:
        if (limit := _positive(found.get(key))) is not None:
            return limit
    entries = found.get("data")
    entries = [entries] if isinstance(entries, Mapping) else entries  # infinity's old /models: one entry
    if not isinstance(entries, list):
        return None
    ours = [e for e in entries if isinstance(e, Mapping) and same_model(model, str(e.get("id", "")))]
    for entry in ours or (entries if len(entries) == 1 else []):
        for where in (entry, entry.get("stats")):
            if isinstance(where, Mapping):
                for key in _LIMIT_KEYS:
                    if (limit := _positive(where.get(key))) is not None:
                        return limit
    return None


def same_model(asked: str, served: str) -> bool:
    """Whether `served` (an answer's `model`) names the model `asked` for: case, an org prefix and `:latest` aside."""

    def plain(name: str) -> str:
        return name.strip().lower().removesuffix(":latest").rsplit("/", 1)[-1]

    return not served.strip() or plain(asked) == plain(served)


def plausible_usage(reported: int, estimated: int) -> bool:
    """Whether a reported token count can be tokens as we count them (not characters, not garbage)."""
    return estimated / _USAGE_FACTOR - _USAGE_MARGIN <= reported <= estimated * _USAGE_FACTOR + _USAGE_MARGIN


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def over_limit(texts: list[str], tokenizer: Tokenizer, limit: int | None, truncated: dict[int, int]) -> dict[int, int]:
    """`truncated` with the texts over the server's stated `limit` added (dropped tokens: our count's estimate).

    A text fits when its characters do. Runs in a worker thread, like the engine's cut.
    """
    if limit is not None:
        for index, text in enumerate(texts):
            if index not in truncated and len(text) > limit and (count := tokenizer.count(text)) > limit:
                truncated[index] = count - limit
    return truncated


class AnswerChecks:
    """What an answer says that cannot be taken at its word: each kind of doubt is logged once."""

    def __init__(self, label: str, model: str, prefix: str) -> None:
        self._label, self._model, self._prefix = label, model, prefix
        self._warned: set[str] = set()

    def model(self, served: object) -> None:
        """Warn when the answer names another model than the one asked for."""
        if isinstance(served, str) and not same_model(self._model, served):
            self.warn_once(
                "model",
                f"{self._label} answered with model {served!r}, not {self._model!r} as asked: it serves its own "
                f"model whatever the request names. Set {self._prefix}_MODEL={served} so the space names it.",
            )

    def usage(self, reported: int | None, estimated: int | None) -> int | None:
        """The reported usage, or None (our estimate is used, marked) when it cannot be tokens."""
        if reported is None or estimated is None or plausible_usage(reported, estimated):
            return reported
        self.warn_once(
            "usage",
            f"{self._label} reported {reported} tokens for texts we count as {estimated}: not tokens as we count "
            "them (characters?). Our own count is used instead, marked tokens_estimated.",
        )
        return None

    def warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            logger.warning("%s", message)
