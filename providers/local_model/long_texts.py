"""What the model sees of each text: pure functions of token ids and the model's window, no I/O.

```python
plan = plan_windows(token_ids, specials=(1, 1), max_length=256, policy="split", overlap=64)
vectors = combine_windows(window_vectors, plan, text_count=len(token_ids))
```

A text that fits the window is one window. A longer one is either cut to the window
(`truncate`: the model sees its beginning, and the dropped tokens are reported) or cut into
overlapping windows (`split`: every token is seen; the windows' vectors are averaged, weighted by
how many of the text's tokens each holds, and renormalised). A prompt the text begins with
(`prompt_ids`) starts every window of a split text, so each one is read as the model expects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["LONG_TEXT_POLICIES", "InputPlan", "LongTextPolicy", "Window", "combine_windows", "plan_windows"]

LongTextPolicy = Literal["truncate", "split"]
LONG_TEXT_POLICIES: tuple[LongTextPolicy, ...] = ("truncate", "split")


@dataclass(frozen=True)
class Window:
    """One model input: a text's tokens (with the model's special tokens around them)."""

    text: int
    """Index of the text the window comes from."""
    ids: list[int]
    weight: int
    """How many of the text's own tokens the window holds (special tokens are not the text)."""


@dataclass(frozen=True)
class InputPlan:
    windows: list[Window]
    dropped: dict[int, int] = field(default_factory=dict)
    """Index of each truncated text → tokens the model never saw."""

    @property
    def tokens(self) -> int:
        """Tokens the model processes, special tokens and overlaps included."""
        return sum(len(window.ids) for window in self.windows)


def plan_windows(
    token_ids: Sequence[Sequence[int]],
    *,
    specials: tuple[int, int],
    max_length: int,
    policy: LongTextPolicy,
    overlap: int,
    prompt_ids: Sequence[int] = (),
) -> InputPlan:
    """Windows for texts tokenized with special tokens; `specials` = (leading, trailing) special-token counts."""
    lead, trail = specials
    room = max_length - lead - trail
    if room < 1:
        raise ValueError(f"a window of {max_length} tokens leaves no room beside {lead + trail} special tokens")
    if policy == "split" and not 0 <= overlap < room:
        raise ValueError(f"overlap must be at least 0 and below {room} tokens, got {overlap}")
    windows: list[Window] = []
    dropped: dict[int, int] = {}
    for index, ids in enumerate(token_ids):
        prefix, content, suffix = list(ids[:lead]), list(ids[lead : len(ids) - trail]), list(ids[len(ids) - trail :])
        if len(content) <= room:
            windows.append(Window(index, list(ids), len(content)))
        elif policy == "truncate":
            windows.append(Window(index, prefix + content[:room] + suffix, room))
            dropped[index] = len(content) - room
        else:
            head = _common_prefix(content, prompt_ids)
            body, body_room = content[head:], room - head
            if body_room <= overlap:  # a prompt too long to repeat: split the whole text instead
                head, body, body_room = 0, content, room
            for start in _window_starts(len(body), body_room, overlap):
                piece = body[start : start + body_room]
                windows.append(Window(index, prefix + content[:head] + piece + suffix, len(piece)))
    return InputPlan(windows, dropped)


def combine_windows(
    window_vectors: npt.NDArray[np.float32], plan: InputPlan, *, text_count: int
) -> npt.NDArray[np.float32]:
    """One L2-normalised vector per text: the token-weighted mean of its windows' vectors."""
    texts = np.fromiter((w.text for w in plan.windows), dtype=np.intp, count=len(plan.windows))
    # A text with no tokens of its own still has its one window: count it, do not zero it.
    weights = np.fromiter((max(w.weight, 1) for w in plan.windows), dtype=np.float32, count=len(plan.windows))
    combined = np.zeros((text_count, window_vectors.shape[1]), dtype=np.float32)
    np.add.at(combined, texts, window_vectors * weights[:, None])
    combined /= np.maximum(np.linalg.norm(combined, axis=1, keepdims=True), 1e-12)
    return combined


def part_of(plan: InputPlan, texts: Sequence[int]) -> tuple[InputPlan, list[int]]:
    """The plan of some of its texts (numbered by their place in `texts`), and the indexes of their windows."""
    position = {text: n for n, text in enumerate(texts)}
    picked = [i for i, window in enumerate(plan.windows) if window.text in position]
    windows = [dataclasses.replace(plan.windows[i], text=position[plan.windows[i].text]) for i in picked]
    return InputPlan(windows, {position[t]: plan.dropped[t] for t in texts if t in plan.dropped}), picked


def _common_prefix(content: Sequence[int], prompt_ids: Sequence[int]) -> int:
    """How many leading tokens of `content` are the prompt's (tokenizers may merge its last one)."""
    count = 0
    for ours, prompts in zip(content, prompt_ids, strict=False):
        if ours != prompts:
            break
        count += 1
    return count


def _window_starts(length: int, room: int, overlap: int) -> range:
    """Starts of windows of `room` tokens, `overlap` shared with the previous one, covering `length`."""
    stride = room - overlap
    beyond_first = max(length - room, 0)
    count = 1 + -(-beyond_first // stride)  # ceiling division
    return range(0, count * stride, stride)
