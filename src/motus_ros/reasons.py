"""Why the robot held (policy node) or a frame was not recorded (recorder node): reasons counted by kind.

A reason's kind is its wording without the numbers ("stale: high is 1.1 s old" and "... 1.3 s old" are one kind),
so a result can list the main few ("<ticks> ticks: <latest wording>") instead of one line per tick.
"""

from __future__ import annotations

import collections
import re

_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")


def reason_kind(reason: str) -> str:
    """A reason without its numbers."""
    return _NUMBER.sub("#", reason)


class ReasonTally:
    """Ticks per kind of reason, each kind worded as it was last seen."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()  # kind -> ticks
        self.examples: dict[str, str] = {}  # kind -> its latest wording

    def add(self, reason: str, ticks: int = 1) -> None:
        kind = reason_kind(reason)
        self.counts[kind] += ticks
        self.examples[kind] = reason

    def main(self, count: int) -> list[str]:
        """The `count` most frequent kinds, most frequent first: "<ticks> ticks: <latest wording>"."""
        return [f"{ticks} ticks: {self.examples[kind]}" for kind, ticks in self.counts.most_common(count)]
