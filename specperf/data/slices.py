"""Dataset slices: a deterministic, named selection of records (used in case ids)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from specperf.data.prompt import Record
from specperf.errors import DataError

SLICE_FORMS = "'all', '<start>:<stop>' (e.g. '0:32'), 'head:<n>', 'random:<n>[:seed=<int>]'"


@dataclass(frozen=True)
class SliceSpec:
    """A deterministic selection of records; ``name`` is its canonical string form.

    kind "all": every record; "range": ``records[start:stop]``; "head": ``records[:stop]``
    (named "head:<stop>"); "random": ``n`` rows drawn without replacement by
    ``random.Random(seed).sample`` over the row indices, in the order drawn.
    """

    kind: str
    start: int = 0
    stop: int | None = None
    n: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("all", "range", "head", "random"):
            raise DataError(f"unknown slice kind {self.kind!r}; accepted forms: {SLICE_FORMS}")
        if self.kind in ("range", "head") and (self.stop is None or self.stop <= self.start):
            raise DataError(f"slice {self.name!r} selects no rows; use a stop larger than the "
                            "start, e.g. '0:32' or 'head:32'")
        if self.kind == "random" and (self.n is None or self.n <= 0):
            raise DataError(f"slice {self.name!r} selects no rows; ask for at least one, "
                            "e.g. 'random:32:seed=0'")

    @property
    def name(self) -> str:
        """Canonical, stable string (used in benchmark ids); ``parse_slice(name) == self``."""
        if self.kind == "range":
            return f"{self.start}:{self.stop}"
        if self.kind == "head":
            return f"head:{self.stop}"
        if self.kind == "random":
            return f"random:{self.n}:seed={self.seed}"
        return "all"


_RANGE = re.compile(r"(\d+):(\d+)")
_HEAD = re.compile(r"head:(\d+)")
_RANDOM = re.compile(r"random:(\d+)(?::seed=(\d+))?")


def parse_slice(spec: str) -> SliceSpec:
    """Parse "all", "<start>:<stop>", "head:<n>" or "random:<n>[:seed=<int>]" (default seed 0)."""
    text = spec.strip() if isinstance(spec, str) else ""
    if text == "all":
        return SliceSpec("all")
    if match := _RANGE.fullmatch(text):
        return SliceSpec("range", start=int(match[1]), stop=int(match[2]))
    if match := _HEAD.fullmatch(text):
        return SliceSpec("head", stop=int(match[1]))
    if match := _RANDOM.fullmatch(text):
        return SliceSpec("random", n=int(match[1]), seed=int(match[2] or 0))
    raise DataError(f"malformed slice {spec!r}; accepted forms: {SLICE_FORMS} "
                    "(non-negative integers only)")


def apply_slice(records: Sequence[Record], spec: SliceSpec | str) -> list[Record]:
    """Select records by ``spec`` (a SliceSpec or its string form); DataError if out of range."""
    spec = parse_slice(spec) if isinstance(spec, str) else spec
    total = len(records)
    if total == 0:
        raise DataError(f"slice {spec.name!r} selects no rows because no records are loaded; "
                        "check the prompt source")
    if spec.kind == "all":
        return list(records)
    if spec.kind == "random":
        assert spec.n is not None  # guaranteed by SliceSpec.__post_init__
        if spec.n > total:
            raise DataError(f"slice {spec.name!r} asks for {spec.n} rows but only {total} are "
                            f"loaded; use random:<n> with n <= {total}, or 'all'")
        indices = random.Random(spec.seed).sample(range(total), spec.n)
        return [records[i] for i in indices]
    assert spec.stop is not None
    if spec.stop > total:
        raise DataError(f"slice {spec.name!r} needs rows up to {spec.stop} but only {total} are "
                        f"loaded; use a stop <= {total} (e.g. '0:{total}') or 'all'")
    return list(records[spec.start:spec.stop])
