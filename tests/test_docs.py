"""The docs pages that mirror the code are generated from it: the options table lists exactly the options pytest
accepts from the plugin, and the pages keep the markers the build replaces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from specperf.output.options_doc import declared_options, options_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_options_table_lists_every_option_pytest_accepts_from_the_plugin(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    accepted = set(re.findall(r"--specperf-[a-z0-9-]+", proc.stdout))
    options, ini = declared_options()
    declared = {name for opt in options for name in opt.names}
    assert declared == accepted
    table = options_table()
    assert all(f"`{name}`" in table for name in declared)
    assert ("specperf_config" in dict(ini)) and "`specperf_config`" in table


def test_every_option_says_what_it_does_and_its_default() -> None:
    options, _ = declared_options()
    for opt in options:
        assert opt.help and "default" in opt.help, opt.names


def test_generated_pages_keep_their_markers() -> None:
    assert "<!-- specperf:options -->" in (DOCS / "suite.md").read_text(encoding="utf-8")
    assert "<!-- specperf:contract -->" in (DOCS / "contract.md").read_text(encoding="utf-8")


def _fields(cls: type) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


def test_every_suite_yaml_key_is_documented() -> None:
    from specperf.config import schema

    suite = (DOCS / "suite.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in suite.splitlines() if line.startswith("| `"))
    sections = {"drafts[].": schema.DraftSpec, "dataset.": schema.DatasetSpec, "generation.": schema.GenerationSpec,
                "timing.": schema.TimingSpec, "vllm.": schema.VllmSpec, "serving.": schema.ServingSpec}
    missing = [name for name in _fields(schema.SuiteConfig) if f"`{name}" not in table]
    for prefix, cls in sections.items():
        missing += [prefix + name for name in _fields(cls)
                    if f"`{prefix}{name}`" not in table and not re.search(rf"`{re.escape(prefix)}[a-z_]+`, `{name}`",
                                                                           table)
                    and f", `{prefix}{name}`" not in table]
    assert not missing, f"docs/suite.md's YAML table lacks {missing}"
    gates = (DOCS / "gates.md").read_text(encoding="utf-8")
    for cls in (schema.Floors, schema.Tolerances, schema.TimingGate):
        absent = [name for name in _fields(cls) if f"{name}:" not in gates]
        assert not absent, f"docs/gates.md's thresholds YAML lacks {cls.__name__} keys {absent}"


def test_the_api_page_renders_every_public_name_of_the_package() -> None:
    import importlib

    import specperf

    page = (DOCS / "api.md").read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: ([\w.]+)$", page, flags=re.M))
    for name in specperf.__all__:
        module = getattr(specperf, name).__module__
        assert f"{module}.{name}" in rendered or module in rendered, f"{name} is missing from docs/api.md"
    for target in rendered:  # every rendered target exists, as a module or as a name in one
        module, _, attr = target.rpartition(".")
        try:
            importlib.import_module(target)
        except ModuleNotFoundError:
            assert hasattr(importlib.import_module(module), attr), target
