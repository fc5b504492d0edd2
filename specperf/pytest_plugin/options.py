"""The plugin's command-line options: parsers that raise argparse.ArgumentTypeError, and the parsed Options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from specperf.config.cases import Shard
from specperf.config.schema import DEFAULT_CONFIG_PATH, DEVICE_PATTERN, DTYPES, MAX_BATCH_SIZE, MAX_K, MAX_NEW_TOKENS


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    config_path: Path
    device: str | None
    dtype: str | None
    drafts: tuple[str, ...] | None
    k: tuple[int, ...] | None
    slices: tuple[str, ...] | None
    batch_size: tuple[int, ...] | None
    max_new_tokens: int | None
    shard: Shard | None
    thresholds_path: Path | None
    baseline_paths: tuple[Path, ...]  # files or directories of earlier runs; empty: floors only
    report_dir: Path | None
    ab_root: Path | None = None  # side A's checkout: an in-session A/B against it (this checkout is B)
    ab_python: str | None = None  # side A's interpreter (default: this one)
    ab_config: Path | None = None  # side A's suite YAML (default: this run's suite's path inside A's checkout)
    ab_out: Path = Path("specperf-ab")  # the A/B's report, side A's JSON and the workers' logs
    ab_alpha: float = 0.05  # the A/B's false-alarm budget over the whole session
    ab_min_effect: float = 0.02  # the smallest change the A/B calls DIFFERENT
    ab_max_pairs: int = 24  # the A/B's cap on paired rounds per case
    ab_grain: str = "auto"  # how the A/B pairs rounds: duet (both sides at once, own CPUs), alternate, case, auto


def parse_list(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}; fix: name at least one, "
                                         "e.g. draft-small,prompt-lookup")
    return items


def _parse_ints(value: str, option: str, what: str, lo: int, hi: int, example: str) -> tuple[int, ...]:
    """Comma-separated integers, each in lo..hi; errors name the option and an example that works."""
    try:
        numbers = tuple(int(v) for v in parse_list(value))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as {example}, got {value!r}; "
                                         f"fix: pass e.g. {option}={example}") from None
    if any(not lo <= n <= hi for n in numbers):
        raise argparse.ArgumentTypeError(f"each {what} must be in {lo}..{hi}, got {value!r}; fix: pass values "
                                         f"in that range, e.g. {option}={example}")
    return numbers


def parse_k(value: str) -> tuple[int, ...]:
    return _parse_ints(value, "--specperf-k", "k", 1, MAX_K, "2,4")


def parse_batch(value: str) -> tuple[int, ...]:
    return _parse_ints(value, "--specperf-batch", "batch size", 1, MAX_BATCH_SIZE, "1,4,8")


def parse_new_tokens(value: str) -> int:
    (number,) = _parse_ints(value, "--specperf-max-new-tokens", "count", 1, MAX_NEW_TOKENS, "16")
    return number


def parse_shard(value: str) -> Shard:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {value!r}; fix: pass e.g. "
                                         "--specperf-shard=2/3 on the second of three runners")
    return Shard(int(index), int(count))


def parse_device(value: str) -> str:
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}; "
                                         "fix: pass e.g. --specperf-device cpu")
    return value


def parse_dtype(value: str) -> str:
    if value not in DTYPES:
        raise argparse.ArgumentTypeError(f"expected {', '.join(DTYPES)}, got {value!r}")
    return value


def parse_file_or_dir(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {value}; fix: pass a --benchmark-json file or a "
                                         f"folder of them (a relative path starts at {Path.cwd()})")
    return path


def parse_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}; fix: pass an existing file (a relative path "
                                         f"starts at {Path.cwd()})")
    return path


def parse_checkout(value: str) -> Path:
    path = Path(value).resolve()
    if not (path / "specperf" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a specperf checkout (no specperf/__init__.py in it); fix: "
                                         "pass the other side's checkout, e.g. `git worktree add ../main main` and "
                                         "--specperf-ab=../main")
    return path


def parse_fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value!r}; fix: pass e.g. 0.05")
    return number


def parse_pairs(value: str) -> int:
    (number,) = _parse_ints(value, "--specperf-ab-max-pairs", "pair count", 2, 10_000, "24")
    return number


def _add_ab_options(group: pytest.OptionGroup) -> None:
    group.addoption("--specperf-ab", metavar="PATH", type=parse_checkout, default=None,
                    help="measure this checkout (B) against side A's checkout at PATH in one session, round by round "
                         "(default: off)")
    group.addoption("--specperf-ab-python", metavar="PYTHON", default=None,
                    help="side A's interpreter, when A needs its own environment (default: this interpreter)")
    group.addoption("--specperf-ab-config", metavar="PATH", type=parse_file, default=None,
                    help="side A's suite YAML (default: this run's suite, at the same path inside A's checkout "
                         "if it is there)")
    group.addoption("--specperf-ab-out", metavar="DIR", type=Path, default=Path("specperf-ab"),
                    help="where the A/B writes its report, side A's JSON and the workers' logs (default: "
                         "specperf-ab)")
    group.addoption("--specperf-ab-alpha", metavar="A", type=parse_fraction, default=0.05,
                    help="the A/B's chance of any false DIFFERENT or SAME over the whole session (default: 0.05)")
    group.addoption("--specperf-ab-min-effect", metavar="M", type=parse_fraction, default=0.02,
                    help="the smallest relative change the A/B calls DIFFERENT, and its SAME margin (default: 0.02)")
    group.addoption("--specperf-ab-max-pairs", metavar="N", type=parse_pairs, default=24,
                    help="paired rounds per case at most, looked at after 12 and every 6 more (default: 24)")
    group.addoption("--specperf-ab-grain", metavar="GRAIN", choices=("auto", "duet", "alternate", "case"),
                    default="auto",
                    help="duet: both sides' rounds at the same time, each side on its own CPUs (CPU suites with "
                         "`threads:` set); alternate: one side at a time, ABBA; case: a fresh worker per side and "
                         "case run, for verifiers too large for both sides at once; auto: duet where it can run, "
                         "else alternate (default: auto)")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("specperf", "specperf: speculative decoding benchmarks")
    group.addoption("--specperf-config", metavar="PATH", type=parse_file, default=None,
                    help="suite YAML (default: the ini option specperf_config, else the embedded suite "
                         f"{DEFAULT_CONFIG_PATH.name})")
    group.addoption("--specperf-device", metavar="DEVICE", type=parse_device, default=None,
                    help="auto, cpu, cuda or cuda:N (default: the suite's device)")
    group.addoption("--specperf-dtype", metavar="DTYPE", type=parse_dtype, default=None,
                    help=f"{', '.join(DTYPES)} (default: the suite's dtype)")
    group.addoption("--specperf-drafts", metavar="NAMES", type=parse_list, default=None,
                    help="comma-separated draft names to run (default: all drafts of the suite)")
    group.addoption("--specperf-k", metavar="K", type=parse_k, default=None,
                    help=f"comma-separated block sizes, each 1..{MAX_K} (default: the suite's k)")
    group.addoption("--specperf-batch", metavar="SIZES", type=parse_batch, default=None,
                    help="comma-separated batch sizes (requests decoded together), e.g. 1,4,8 "
                         "(default: the suite's batch_size, [1] unless set)")
    group.addoption("--specperf-max-new-tokens", metavar="N", type=parse_new_tokens, default=None,
                    help="new tokens per request (default: the suite's generation.max_new_tokens)")
    group.addoption("--specperf-slice", metavar="SLICES", type=parse_list, default=None,
                    help="comma-separated dataset slices such as 0:8,random:16:seed=0 (default: the suite's)")
    group.addoption("--specperf-shard", metavar="I/N", type=parse_shard, default=None,
                    help="run only shard I of N: a deterministic, balanced share of the cases by stable id, for a CI "
                         "matrix; combine the JSON files with `specperf merge` (default: every case)")
    group.addoption("--specperf-thresholds", metavar="PATH", type=parse_file, default=None,
                    help="thresholds YAML, applied over the suite's inline thresholds (default: none)")
    group.addoption("--specperf-baseline", metavar="PATH", type=parse_file_or_dir, action="append", default=None,
                    help="earlier --benchmark-json file(s) to gate against: repeat it, or pass a folder of runs; "
                         "several runs let the timing gate measure how much whole runs drift (default: none, "
                         "floors only)")
    group.addoption("--specperf-report", metavar="DIR", type=Path, default=None,
                    help="write tables (and plots) of the run to DIR at the end (default: none)")
    _add_ab_options(group)
    parser.addini("specperf_config", "suite YAML used when --specperf-config is not given", default="")


def read_options(pytest_config: pytest.Config) -> Options:
    option = pytest_config.getoption
    path = option("specperf_config")
    if path is None:
        ini = pytest_config.getini("specperf_config")
        path = Path(pytest_config.rootpath, ini) if ini else DEFAULT_CONFIG_PATH
    return Options(
        config_path=path, device=option("specperf_device"), dtype=option("specperf_dtype"),
        drafts=option("specperf_drafts"), k=option("specperf_k"),
        slices=option("specperf_slice"), batch_size=option("specperf_batch"),
        max_new_tokens=option("specperf_max_new_tokens"), shard=option("specperf_shard"),
        thresholds_path=option("specperf_thresholds"),
        baseline_paths=tuple(option("specperf_baseline") or ()),
        report_dir=option("specperf_report"),
        ab_root=option("specperf_ab"), ab_python=option("specperf_ab_python"),
        ab_config=option("specperf_ab_config"), ab_out=option("specperf_ab_out"),
        ab_alpha=option("specperf_ab_alpha"), ab_min_effect=option("specperf_ab_min_effect"),
        ab_max_pairs=option("specperf_ab_max_pairs"), ab_grain=option("specperf_ab_grain"),
    )
