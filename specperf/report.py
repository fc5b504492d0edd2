"""Reports written from recorded metrics. Writes go to a temporary file first, then rename: never half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from specperf.tables import acceptance_table, performance_table


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_summary(results: Mapping[str, Mapping[str, Any]], out_dir: Path) -> Path:
    """outputs/summary.md: the performance and acceptance tables."""
    lines = ["# specperf summary", "", "## Performance per case", "", *performance_table(results), "",
             "## Acceptance per draft", "", *acceptance_table(results), ""]
    path = Path(out_dir) / "summary.md"
    atomic_write(path, "\n".join(lines))
    return path
