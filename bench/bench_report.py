"""The one way a bench script reports: JSON on stdout and, with ``--out``, the same text in a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], out: str | Path | None) -> None:
    """Print ``report`` as indented JSON; also write it to ``out`` (atomically: never a half-written file)."""
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text + "\n")
        os.replace(partial, path)
