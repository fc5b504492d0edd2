"""Prompt sources: load PubMedQA-shaped records from the hub, the original JSON, local files or the embedded set.

Sources (see :func:`load_records`):

* ``"hf"`` - the Hugging Face dataset ``qiaojin/PubMedQA`` (or a local file/directory
  that ``datasets.load_dataset`` can read, passed as ``path``);
* ``"pubmedqa-json"`` - the original PMID-keyed PubMedQA JSON (``ori_pqal.json``);
* ``"file"`` - a local .parquet / .jsonl / .json / .csv in the HF schema or flat
  ``id,question,abstract[,long_answer]`` columns;
* ``"embedded"`` - the synthetic set of :mod:`specperf.data.synth` (no download).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from specperf.data import synth
from specperf.data.prompt import DEFAULT_TEMPLATE, Record, check_template, render_prompt
from specperf.errors import DataError

logger = logging.getLogger(__name__)

SOURCES = ("hf", "pubmedqa-json", "file", "embedded")
HF_DATASET = "qiaojin/PubMedQA"
HF_CONFIGS = ("pqa_labeled", "pqa_artificial", "pqa_unlabeled")
HF_COLUMNS = ("pubid", "question", "context")
FLAT_COLUMNS = ("id", "question", "abstract")
FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

Row = dict[str, str]
_BLANK_CHECK_BYTES = 4096  # a file this small is read once to tell a whitespace-only file from data


# --------------------------------------------------------------------------- row conversion


def _text(value: Any) -> str:
    """Cell value as stripped text; None and NaN (missing cells) become ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _join_contexts(context: Any, where: str) -> str:
    """Abstract text from a PubMedQA ``context`` / ``CONTEXTS`` value (paragraphs joined by ' ')."""
    if isinstance(context, str):
        stripped = context.strip()
        if stripped[:1] in ("{", "["):
            try:  # CSV files hold the struct as JSON text
                return _join_contexts(json.loads(stripped), where)
            except json.JSONDecodeError:
                pass
        return stripped
    if isinstance(context, Mapping):
        if "contexts" not in context:
            raise DataError(f"{where}: 'context' has keys {sorted(context)} but no 'contexts'; "
                            "give it the PubMedQA shape {'contexts': [paragraph, ...]}")
        return _join_contexts(context["contexts"], where)
    if hasattr(context, "tolist"):  # numpy arrays from pandas/pyarrow
        context = context.tolist()
    if isinstance(context, Sequence):
        return " ".join(_text(p) for p in context if _text(p))
    return _text(context)


def _detect_schema(columns: Iterable[str], where: str) -> str:
    """'hf' or 'flat' from the column names, or DataError naming found and expected columns."""
    found = set(columns)
    if set(HF_COLUMNS) <= found:
        return "hf"
    if set(FLAT_COLUMNS) <= found:
        return "flat"
    raise DataError(
        f"{where} has columns {sorted(found)}, which fit no supported schema; expected either "
        f"the Hugging Face PubMedQA schema ({', '.join(HF_COLUMNS)}; optional long_answer, "
        f"final_decision) or the flat schema ({', '.join(FLAT_COLUMNS)}; optional long_answer). "
        "Rename the columns to one of these")


def _convert_rows(rows: Sequence[Mapping[str, Any]], where: str) -> list[Row]:
    """Map HF-schema or flat rows to normalized {id, question, abstract, long_answer} dicts."""
    if not rows:
        return []
    columns: set[str] = set()
    for row in rows:
        columns.update(row.keys())
    schema = _detect_schema(columns, where)
    if schema == "flat":
        return [{"id": _text(r.get("id")), "question": _text(r.get("question")),
                 "abstract": _text(r.get("abstract")), "long_answer": _text(r.get("long_answer"))}
                for r in rows]
    return [{"id": _text(r.get("pubid")), "question": _text(r.get("question")),
             "abstract": _join_contexts(r.get("context"), f"{where}, row {i}"),
             "long_answer": _text(r.get("long_answer"))}
            for i, r in enumerate(rows)]


def _make_records(rows: Sequence[Row], where: str, template: str) -> list[Record]:
    """Validate normalized rows and render their prompts."""
    if not rows:
        raise DataError(f"{where} contains no rows; point to a source with at least one record")
    records: list[Record] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        for key in ("id", "question", "abstract"):
            if not row[key]:
                raise DataError(f"{where}: row {index} (id {row['id']!r}) has an empty {key}; "
                                f"fill in {key} for every row or drop that row")
        if row["id"] in seen:
            raise DataError(f"{where}: id {row['id']!r} appears more than once; ids name rows in "
                            "benchmark results, so give every row a unique id")
        seen.add(row["id"])
        prompt = render_prompt(template, row["question"], row["abstract"])
        records.append(Record(row["id"], row["question"], row["abstract"], prompt,
                              row.get("long_answer", "")))
    return records


# --------------------------------------------------------------------------- file readers


def require_file(path: str | Path | None, source: str) -> Path:
    """Existing, non-empty file at ``path``, or DataError saying what is wrong with it."""
    if path is None:
        raise DataError(f"source {source!r} needs a file: pass path=<file>")
    file = Path(path)
    if not file.exists():
        raise DataError(f"prompt file not found: {file}; check the path (relative paths are "
                        f"resolved from {Path.cwd()})")
    if not file.is_file():
        raise DataError(f"{file} is not a file; pass the path of a data file")
    size = file.stat().st_size
    if size == 0 or (size <= _BLANK_CHECK_BYTES and not file.read_bytes().strip()):
        raise DataError(f"prompt file {file} is empty{'' if size == 0 else ' (only whitespace)'}; point to a "
                        "file with at least one record")
    return file


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file} is not UTF-8 text ({exc}); re-save it as UTF-8") from exc


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where} is malformed JSON: {exc.msg} at line {exc.lineno}, column "
                        f"{exc.colno}; fix the file there") from exc


def _read_jsonl(file: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        obj = _parse_json(line, f"{file} line {lineno}")
        if not isinstance(obj, dict):
            raise DataError(f"{file} line {lineno} is a {type(obj).__name__}, not a JSON object; "
                            "write one object per line")
        rows.append(obj)
    return rows


def _looks_like_original(data: Mapping[str, Any]) -> bool:
    first = next(iter(data.values()), None)
    return isinstance(first, Mapping) and "QUESTION" in first


def _read_json_list(file: Path) -> list[dict[str, Any]]:
    data = _parse_json(_read_text(file), str(file))
    if isinstance(data, dict) and _looks_like_original(data):
        raise DataError(f"{file} is a PMID-keyed object in the original PubMedQA format; load it "
                        "with source='pubmedqa-json'")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{file} must hold a JSON list of objects (one per record), found a "
                        f"{type(data).__name__}; convert it, or use .jsonl with one object a line")
    return data


def _read_table(file: Path) -> list[dict[str, Any]]:
    """Rows of a .parquet or .csv file via pandas."""
    import pandas as pd  # lazy: only needed for these formats

    try:
        if file.suffix.lower() == ".parquet":
            frame = pd.read_parquet(file)
        else:  # every cell as text, and '' (not NaN) for empty cells
            frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for bad files
        raise DataError(f"cannot read {file} ({type(exc).__name__}: {exc}); check that it is a "
                        f"valid {file.suffix} file") from exc
    return [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]


def _load_file(file: Path) -> list[Row]:
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".csv"):
        rows = _read_table(file)
    elif suffix == ".jsonl":
        rows = _read_jsonl(file)
    elif suffix == ".json":
        rows = _read_json_list(file)
    else:
        raise DataError(f"unsupported file type {file.suffix!r} for {file}; use one of "
                        f"{', '.join(FILE_BUILDERS)}")
    return _convert_rows(rows, str(file))


def _load_pubmedqa_json(file: Path) -> list[Row]:
    """Rows of the original PubMedQA JSON: {pmid: {QUESTION, CONTEXTS, LONG_ANSWER, ...}}."""
    data = _parse_json(_read_text(file), str(file))
    if not isinstance(data, dict):
        raise DataError(f"{file} holds a JSON {type(data).__name__}, but source 'pubmedqa-json' "
                        "expects an object keyed by PMID; for a list of records use source='file'")
    rows: list[Row] = []
    for pmid, entry in data.items():
        if not isinstance(entry, dict) or not {"QUESTION", "CONTEXTS"} <= entry.keys():
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise DataError(f"{file}: entry {pmid!r} has {keys}; expected the original PubMedQA "
                            "shape {pmid: {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}}")
        rows.append({"id": _text(pmid), "question": _text(entry["QUESTION"]),
                     "abstract": _join_contexts(entry["CONTEXTS"], f"{file}, entry {pmid}"),
                     "long_answer": _text(entry.get("LONG_ANSWER"))})
    return rows


# --------------------------------------------------------------------------- hugging face


def _hub_unavailable(name: str, config: str, split: str, exc: Exception) -> DataError:
    return DataError(
        f"Hugging Face dataset {name!r} (config {config!r}, split {split!r}) is not available "
        f"offline: it could not be fetched from the Hub nor found in the local datasets cache "
        f"({type(exc).__name__}: {exc}). Fix: connect to the network once so it gets cached; or "
        "point HF_DATASETS_CACHE/HF_HOME at a cache that holds it (with HF_HUB_OFFLINE=1 to skip "
        "network retries); or download a copy and load it with source='file', path=<file> (or "
        "source='hf', path=<local .parquet>)")


def _hf_load_args(path: str | None, config: str, split: str) -> tuple[dict[str, Any], bool]:
    """Keyword arguments for ``datasets.load_dataset`` and whether they point at local data."""
    local = Path(path) if path is not None else None
    if local is not None and local.is_file():
        builder = FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise DataError(f"unsupported file type {local.suffix!r} for {local}; use one of "
                            f"{', '.join(FILE_BUILDERS)}")
        require_file(local, "hf")
        return {"path": builder, "data_files": str(local), "split": "train"}, True
    if local is not None and local.is_dir():
        # A local clone of the hub repo keeps each config in a sub-folder of that name.
        data_dir = config if (local / config).is_dir() else None
        return {"path": str(local), "data_dir": data_dir, "split": split}, True
    name = path or HF_DATASET
    if name == HF_DATASET and config not in HF_CONFIGS:
        raise DataError(f"unknown PubMedQA config {config!r}; use one of {', '.join(HF_CONFIGS)}")
    return {"path": name, "name": config, "split": split}, False


def _load_hf(path: str | None, config: str, split: str) -> tuple[list[Row], str]:
    """Rows from ``datasets.load_dataset`` in the HF PubMedQA schema, and a description."""
    import datasets  # lazy: slow import, and only this source needs it

    kwargs, local = _hf_load_args(path, config, split)
    where = f"local data {path}" if local else f"Hugging Face dataset {kwargs['path']!r}"
    try:
        dataset = datasets.load_dataset(**kwargs)
    except Exception as exc:  # datasets wraps network/cache/format failures in many types
        if not local and isinstance(exc, (ConnectionError, OSError)):
            raise _hub_unavailable(kwargs["path"], config, split, exc) from exc
        raise DataError(f"could not load {where} (config {config!r}, split {split!r}): "
                        f"{type(exc).__name__}: {exc}; check the path, config and split "
                        "names") from exc
    _detect_schema(dataset.column_names, where)
    return _convert_rows(list(dataset), where), where


# --------------------------------------------------------------------------- public loader


def _load_embedded(path: str | None, split: str) -> list[Row]:
    if path is not None:
        raise DataError("source 'embedded' is generated in-process and takes no path; drop path= "
                        "or use source='file'")
    rows = synth.generate_records(synth.EVAL_ROWS, split=split)
    return [{k: r[k] for k in ("id", "question", "abstract", "long_answer")} for r in rows]


def load_records(
    source: str,
    *,
    path: str | None = None,
    hf_config: str = "pqa_labeled",
    split: str | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> list[Record]:
    """Load prompt records from ``source`` ("hf", "pubmedqa-json", "file" or "embedded").

    ``path`` is the file for "file" / "pubmedqa-json"; for "hf" it overrides the dataset
    name or points at a local file/directory readable by ``datasets.load_dataset``.
    ``hf_config`` selects the PubMedQA config ("hf" only). ``split`` defaults to "train"
    for "hf" and to "eval" for "embedded" (other sources have no splits). Every record's
    ``prompt`` is ``template`` rendered with its question and abstract.
    Raises DataError for an unknown source, a missing/empty/malformed file, unrecognized
    columns, empty fields or duplicate ids.
    """
    if source not in SOURCES:
        raise DataError(f"unknown prompt source {source!r}; use one of {', '.join(SOURCES)}")
    check_template(template)
    if source == "hf":
        rows, where = _load_hf(path, hf_config, split or "train")
    elif source == "embedded":
        rows, where = _load_embedded(path, split or "eval"), "embedded synthetic set"
    elif source == "pubmedqa-json":
        file = require_file(path, source)
        rows, where = _load_pubmedqa_json(file), str(file)
    else:
        file = require_file(path, source)
        rows, where = _load_file(file), str(file)
    records = _make_records(rows, where, template)
    logger.info("loaded %d records from %s", len(records), where)
    return records
