"""Reading YAML files: ``yaml.safe_load`` only, and every failure a ConfigError with the file, line and column."""

from __future__ import annotations

from pathlib import Path

import yaml

from specperf.config.schema import DEFAULT_CONFIG_PATH
from specperf.errors import ConfigError


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> ConfigError:
    """ConfigError with the file, line, column and the parser's own words."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:  # ReaderError (bad characters) only knows its character offset
        position = min(getattr(exc, "position", 0), len(text))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        problem = getattr(exc, "reason", None)
    detail = problem or next(iter(str(exc).splitlines()), type(exc).__name__)
    return ConfigError(f"{source}:{line}:{column}: YAML syntax error at line {line}, column {column}: "
                       f"{detail}; fix: correct the YAML there (indentation, ':' after keys, quotes around "
                       "strings that contain ':', '#', '{' or '[')")


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML lets some scalar constructors fail raw: the date 2024-13-01 (ValueError), a bare '!!int' or
        # '!!float' tag without a value (IndexError).
        raise ConfigError(f"{source}: YAML value cannot be read ({type(exc).__name__}: {exc}); fix: quote the "
                          "value if it is meant as a string, and give an explicit tag such as !!int a value of "
                          "its type") from None


def read_yaml(path: str | Path) -> object:
    """``yaml.safe_load`` of a UTF-8 file; every failure is a ConfigError naming the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist; fix: pass an existing YAML file "
                          f"(the default suite is {DEFAULT_CONFIG_PATH})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "fix: save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file)!r} ({exc.strerror or exc}); "
                          "fix: pass a readable YAML file") from None
    return _parse_yaml(text, str(file))
