"""MkDocs hooks (mkdocs.yml ``hooks:``): the pages that mirror the code are generated at build time, never copied.

- ``index.md`` is README.md, its ``docs/`` links made relative to the site;
- ``<!-- specperf:options -->`` becomes the plugin's options table (:func:`specperf.output.options_doc.options_table`)
  ``<!-- specperf:contract -->`` the output contract (:func:`specperf.output.contract_doc.contract_table`) and
  ``<!-- specperf:contract-server -->`` the keys of server cases (:func:`~specperf.output.contract_doc.server_table`);
- the report files under ``outputs/`` (markdown, plots and CSV tables, not the raw runs) are added at
  ``outputs/...``, so the results pages link the tables and plots the last measured runs wrote.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ROOT / "outputs"
RAW = {"runs", "sessions"}  # raw run folders: JSON and logs, not pages
MARKERS = {"<!-- specperf:options -->": "options", "<!-- specperf:contract -->": "contract",
           "<!-- specperf:contract-server -->": "server"}


def _readme() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "index.md", content=_readme()))
    for path in sorted(OUTPUTS.rglob("*")):
        relative = path.relative_to(ROOT)
        if path.is_file() and path.suffix in {".md", ".png", ".csv"} and not RAW & set(relative.parts):
            files.append(File.generated(config, relative.as_posix(), abs_src_path=str(path)))
    return files


def _generated(name: str) -> str:
    if name == "options":
        from specperf.output.options_doc import options_table

        return options_table()
    from specperf.output.contract_doc import contract_table, server_table

    return server_table() if name == "server" else contract_table()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for marker, name in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, _generated(name))
    return markdown
