"""The plugin's command-line options and ini keys as a markdown table, from their own definitions
(:func:`specperf.pytest_plugin.options.add_options`), for the docs' suite page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptionDoc:
    """One option as :func:`add_options` declares it."""

    names: tuple[str, ...]
    metavar: str | None
    help: str


@dataclass
class _Recorder:
    """Stands in for pytest's parser and option group: records what add_options declares."""

    options: list[OptionDoc] = field(default_factory=list)
    ini: list[tuple[str, str]] = field(default_factory=list)

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *names: str, **attrs: Any) -> None:
        self.options.append(OptionDoc(names, attrs.get("metavar"), str(attrs.get("help", ""))))

    def addini(self, name: str, help: str, **attrs: Any) -> None:
        self.ini.append((name, help))


def declared_options() -> tuple[list[OptionDoc], list[tuple[str, str]]]:
    """Every option and ini key the plugin declares, in declaration order."""
    from specperf.pytest_plugin.options import add_options

    recorder = _Recorder()
    add_options(recorder)  # type: ignore[arg-type]  # duck-typed: only getgroup, addoption and addini are called
    return recorder.options, recorder.ini


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_table() -> str:
    """Markdown: each option with its value's name and its help (which states its default), then the ini keys."""
    options, ini = declared_options()
    lines = ["| option | meaning |", "| --- | --- |"]
    for opt in options:
        name = " ".join(f"`{n}`" for n in opt.names) + (f" {opt.metavar}" if opt.metavar else "")
        lines.append(f"| {name} | {_cell(opt.help)} |")
    lines += ["", "| ini key (`[tool.pytest.ini_options]`) | meaning |", "| --- | --- |"]
    lines += [f"| `{name}` | {_cell(text)} |" for name, text in ini]
    return "\n".join(lines)
