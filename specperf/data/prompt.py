"""A prompt record and its template: the unit every prompt source produces."""

from __future__ import annotations

import string
from dataclasses import dataclass

from specperf.errors import DataError

DEFAULT_TEMPLATE = "Question: {question}\nContext: {abstract}\nAnswer:"
TEMPLATE_FIELDS = ("question", "abstract")


@dataclass(frozen=True)
class Record:
    """One prompt: a question, its abstract, the rendered prompt and the reference answer."""

    id: str
    question: str
    abstract: str
    prompt: str
    long_answer: str = ""



def check_template(template: str) -> None:
    """Raise DataError unless ``template`` uses exactly the fields {question} and {abstract}."""
    allowed = "{question} and {abstract}"
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise DataError(f"prompt template is malformed ({exc}); write literal braces as '{{{{' "
                        f"and '}}}}', and use only the fields {allowed}") from exc
    for name, spec, conversion in fields:
        # A format spec such as {question:>999999999999} would pad a prompt to any size; none is needed.
        if spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise DataError(f"prompt template field {shown!r} has a format spec or conversion; "
                            f"write plain {allowed}")
    names = [name for name, _, _ in fields]
    unknown = sorted({repr("{" + n + "}") for n in names if n not in TEMPLATE_FIELDS})
    missing = [f"{{{f}}}" for f in TEMPLATE_FIELDS if f not in names]
    if unknown or missing:
        problems = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        problems += [f"missing {', '.join(missing)}"] if missing else []
        raise DataError(f"prompt template has {'; '.join(problems)}; the allowed fields are "
                        f"{allowed} and both must appear, e.g. {DEFAULT_TEMPLATE!r}")


def render_prompt(template: str, question: str, abstract: str) -> str:
    """Render ``template`` (fields ``{question}`` and ``{abstract}``) into a prompt string."""
    check_template(template)
    try:
        return template.format(question=question, abstract=abstract)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        # Format specs can still be invalid (e.g. '{question:d}') after the field check.
        raise DataError(f"prompt template {template!r} cannot be rendered ({exc!r}); remove "
                        "format specs/conversions and use plain {question} and {abstract}") from exc
