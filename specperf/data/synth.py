"""Deterministic generator of a SYNTHETIC PubMedQA-shaped data set.

Nothing here comes from PubMed or PubMedQA: every question, abstract and answer
is assembled from hand-written sentence templates and word lists. The text only
*looks* like a clinical abstract so that a small drafter model (~10M parameters,
minutes of CPU training) can learn it without network access.

Design goals:

* byte-identical output across runs and platforms: only ``random.Random`` seeded
  from a string is used, and only arithmetic (no libm functions such as ``exp``
  or ``log``, whose last bits differ between platforms) feeds the numbers;
* the "train" and "eval" splits come from different random streams, so eval rows
  do not appear in train;
* highly predictable structure (fixed section order, a few sentence templates)
  with less predictable slot fillers (40-80 entries per main word list);
* ``long_answer`` reuses phrases and numbers from the question and abstract and
  agrees with ``final_decision`` (yes / no / maybe).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from specperf.data.prompt import DEFAULT_TEMPLATE, render_prompt
from specperf.data.synth_words import (
    COMPARATORS,
    CONDITIONS,
    COUNTRIES,
    COVARIATES,
    DESIGNS,
    INTERVENTIONS,
    OUTCOMES,
    POPULATIONS,
    SETTINGS,
    TIMEPOINTS,
)
from specperf.errors import DataError

EVAL_ROWS = 256
"""Number of rows the ``embedded`` prompt source serves."""

END_MARKER = "<|endoftext|>"
"""Appended to every training document (GPT-2's end-of-text token)."""

SPLITS = ("train", "eval")
DECISIONS = ("yes", "no", "maybe")

@dataclass(frozen=True)
class _Case:
    """All slot values and numbers of one synthetic study, drawn before any text is written."""

    decision: str
    intervention: str
    outcome: str
    outcome2: str
    outcome3: str
    condition: str
    population: str
    design: str
    setting: str
    country: str
    comparator: str
    covariates: str
    timepoint: str
    n_sites: int
    year1: int
    year2: int
    n1: int
    n2: int
    k1: int
    k2: int
    odds_ratio: str
    ci_low: str
    ci_high: str
    p_crude: str
    p_adjusted: str
    adjusted_or: str

    @property
    def n_total(self) -> int:
        return self.n1 + self.n2

    @property
    def pct1(self) -> str:
        return f"{100 * self.k1 / self.n1:.1f}"

    @property
    def pct2(self) -> str:
        return f"{100 * self.k2 / self.n2:.1f}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _p_value(rng: random.Random, decision: str) -> str:
    """Crude p-value text consistent with the decision."""
    if decision == "yes":
        return "p<0.001" if rng.random() < 0.3 else f"p={rng.randint(1, 45) / 1000:.3f}"
    if decision == "no":
        return f"p={rng.randint(15, 95) / 100:.2f}"
    return f"p={rng.randint(20, 49) / 1000:.3f}"  # "maybe": significant only before adjustment


def _effect(rng: random.Random, decision: str) -> tuple[float, float, float]:
    """Odds ratio and 95% interval: below 1 for "yes"/"maybe" (crude), spanning 1 for "no"."""
    if decision == "no":
        ratio = rng.uniform(0.85, 1.25)
        low = rng.uniform(max(0.3, ratio - 0.5), min(ratio, 0.98) - 0.02)
        return ratio, low, max(ratio, 1.02) + rng.uniform(0.05, 0.5)
    ratio = rng.uniform(0.35, 0.75) if decision == "yes" else rng.uniform(0.6, 0.85)
    high = rng.uniform(ratio + 0.05, 0.98)
    low = max(0.05, ratio - (high - ratio) * rng.uniform(0.6, 0.9))
    return ratio, low, high


def _counts(rng: random.Random, ratio: float) -> tuple[int, int, int, int]:
    """Group sizes and event counts whose proportions follow the odds ratio."""
    total = rng.randint(80, 4000)
    n1 = int(total * rng.uniform(0.4, 0.6))
    n2 = total - n1
    base = rng.uniform(0.05, 0.4)
    odds = ratio * base / (1 - base)
    k1 = max(1, round(n1 * odds / (1 + odds)))
    k2 = max(1, round(n2 * base))
    return n1, n2, k1, k2


def _adjusted(rng: random.Random, decision: str, ratio: float) -> tuple[str, str]:
    """Adjusted odds ratio and p-value: significant only for "yes" ("maybe" loses significance)."""
    adj = ratio * (rng.uniform(0.95, 1.08) if decision != "maybe" else rng.uniform(1.05, 1.2))
    if decision == "yes":
        p_adj = f"p={rng.randint(1, 48) / 1000:.3f}"
    elif decision == "no":
        p_adj = f"p={rng.randint(20, 90) / 100:.2f}"
    else:
        p_adj = f"p={rng.randint(60, 240) / 1000:.3f}"
    return f"{adj:.2f}", p_adj


def _draw_case(rng: random.Random) -> _Case:
    """Draw every random choice of one record, in a fixed order (keeps streams reproducible)."""
    decision = rng.choice(DECISIONS)
    outcome, outcome2, outcome3 = rng.sample(OUTCOMES, 3)
    ratio, low, high = _effect(rng, decision)
    n1, n2, k1, k2 = _counts(rng, ratio)
    adjusted_or, p_adjusted = _adjusted(rng, decision, ratio)
    year1 = rng.randint(1995, 2018)
    return _Case(
        decision=decision, intervention=rng.choice(INTERVENTIONS), outcome=outcome,
        outcome2=outcome2, outcome3=outcome3, condition=rng.choice(CONDITIONS),
        population=rng.choice(POPULATIONS), design=rng.choice(DESIGNS),
        setting=rng.choice(SETTINGS), country=rng.choice(COUNTRIES),
        comparator=rng.choice(COMPARATORS), covariates=rng.choice(COVARIATES),
        timepoint=rng.choice(TIMEPOINTS), n_sites=rng.randint(2, 40), year1=year1,
        year2=year1 + rng.randint(1, 6), n1=n1, n2=n2, k1=k1, k2=k2,
        odds_ratio=f"{ratio:.2f}", ci_low=f"{low:.2f}", ci_high=f"{high:.2f}",
        p_crude=_p_value(rng, decision), p_adjusted=p_adjusted, adjusted_or=adjusted_or,
    )


def _question(rng: random.Random, c: _Case) -> str:
    forms = (
        f"Does {c.intervention} reduce {c.outcome} in patients with {c.condition}?",
        f"Does {c.intervention} reduce {c.outcome} in patients with {c.condition}?",
        f"Is {c.intervention} associated with lower {c.outcome} in {c.population} with "
        f"{c.condition}?",
        f"Can {c.intervention} reduce {c.outcome} in {c.population} with {c.condition}?",
    )
    return rng.choice(forms)


def _background(rng: random.Random, c: _Case, with_aim: bool) -> list[str]:
    forms = (
        f"{_cap(c.outcome)} is a common and costly problem in patients with {c.condition}, and "
        "it is associated with worse quality of life and greater use of health care resources.",
        f"Patients with {c.condition} are at increased risk of {c.outcome}, and effective "
        "preventive strategies that can be delivered in routine clinical practice are lacking.",
        f"{_cap(c.intervention)} has been proposed to reduce {c.outcome}, but evidence in "
        f"{c.condition} is limited and largely comes from small single-centre studies.",
        f"The effect of {c.intervention} on {c.outcome} in patients with {c.condition} remains "
        "controversial, and current guidelines make no firm recommendation.",
    )
    sentences = [rng.choice(forms)]
    if with_aim:
        sentences.append(f"We aimed to determine whether {c.intervention} reduces {c.outcome} "
                         f"in {c.population} with {c.condition}.")
    return sentences


def _methods(c: _Case, long_form: bool, with_secondary: bool) -> list[str]:
    where = f"{c.n_sites} {c.setting} in {c.country}"
    arms = (f"{c.intervention} (n={c.n1}) or {c.comparator} (n={c.n2}), and the primary outcome "
            f"was {c.outcome} at {c.timepoint}")
    if not long_form:
        return [f"In this {c.design} conducted between {c.year1} and {c.year2}, {c.n_total} "
                f"{c.population} with {c.condition} from {where} received {arms}."]
    sentences = [
        f"We conducted a {c.design} of {c.n_total} {c.population} with {c.condition} treated at "
        f"{where} between {c.year1} and {c.year2}.",
        f"Participants received {arms}.",
    ]
    if with_secondary:
        sentences.append(f"Secondary outcomes included {c.outcome2} and {c.outcome3}.")
    return sentences


def _results(c: _Case, with_adjusted: bool) -> list[str]:
    sentences = [
        f"{_cap(c.outcome)} occurred in {c.k1} of {c.n1} patients ({c.pct1}%) in the "
        f"{c.intervention} group and in {c.k2} of {c.n2} patients ({c.pct2}%) in the "
        f"{c.comparator} group (odds ratio {c.odds_ratio}, 95% confidence interval {c.ci_low} "
        f"to {c.ci_high}; {c.p_crude}).",
    ]
    if with_adjusted:
        verdict = {
            "yes": "the association remained significant",
            "no": "there was still no significant difference",
            "maybe": "the difference was no longer significant",
        }[c.decision]
        sentences.append(f"After adjustment for {c.covariates}, {verdict} (adjusted odds ratio "
                         f"{c.adjusted_or}; {c.p_adjusted}).")
    return sentences


def _conclusion(rng: random.Random, c: _Case) -> str:
    who = f"{c.population} with {c.condition}"
    forms = {
        "yes": (f"{_cap(c.intervention)} was associated with a significant reduction in "
                f"{c.outcome} among {who}.",
                f"In {who}, {c.intervention} reduced {c.outcome} compared with {c.comparator}."),
        "no": (f"{_cap(c.intervention)} did not reduce {c.outcome} in {who} compared with "
               f"{c.comparator}.",
               f"In {who}, {c.intervention} had no significant effect on {c.outcome}."),
        "maybe": (f"{_cap(c.intervention)} may reduce {c.outcome} in {who}, but larger trials "
                  "are needed to confirm this finding.",
                  f"The effect of {c.intervention} on {c.outcome} in {who} remains uncertain."),
    }[c.decision]
    return rng.choice(forms)


def _abstract(rng: random.Random, c: _Case) -> str:
    """4-7 sentences under BACKGROUND/METHODS/RESULTS/CONCLUSIONS labels."""
    with_aim = rng.random() < 0.5
    long_methods = rng.random() < 0.6
    # "maybe" is a crude effect that vanishes after adjustment, so it needs that sentence.
    with_adjusted = c.decision == "maybe" or rng.random() < 0.7
    # Cap at 7 sentences: the secondary-outcome sentence is the first to go.
    with_secondary = long_methods and rng.random() < 0.5 and not (with_aim and with_adjusted)
    parts = [
        "BACKGROUND: " + " ".join(_background(rng, c, with_aim)),
        "METHODS: " + " ".join(_methods(c, long_methods, with_secondary)),
        "RESULTS: " + " ".join(_results(c, with_adjusted)),
        "CONCLUSIONS: " + _conclusion(rng, c),
    ]
    return " ".join(parts)


def _long_answer(rng: random.Random, c: _Case) -> str:
    """1-2 sentences reusing the question's phrases and the abstract's numbers."""
    who = f"{c.population} with {c.condition}"
    numbers = f"{c.pct1}% versus {c.pct2}%; odds ratio {c.odds_ratio}, {c.p_crude}"
    first, second = {
        "yes": (f"{_cap(c.intervention)} reduced {c.outcome} in {who} ({numbers}).",
                f"These findings support {c.intervention} in routine care for {c.condition}."),
        "no": (f"{_cap(c.intervention)} did not reduce {c.outcome} in {who} ({numbers}).",
               f"Routine use of {c.intervention} to prevent {c.outcome} is not supported."),
        "maybe": (f"{_cap(c.intervention)} may reduce {c.outcome} in {who} ({numbers}), but the "
                  f"effect was not robust after adjustment for {c.covariates}.",
                  f"Larger randomized trials are needed before {c.intervention} can be "
                  "recommended."),
    }[c.decision]
    return f"{first} {second}" if rng.random() < 0.5 else first


def _rng_for(split: str, seed: int) -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random, so they are portable;
    # the split name in the seed keeps the train and eval streams apart.
    return random.Random(f"specperf.synth/{split}/{seed}")


def generate_records(n: int, *, split: str, seed: int = 0) -> list[dict[str, str]]:
    """Generate ``n`` synthetic PubMedQA-shaped rows for ``split`` ("train" or "eval").

    Each row has ``id`` ("synth-<split>-000001", 1-based), ``question``, ``abstract``,
    ``long_answer`` and ``final_decision`` ("yes" / "no" / "maybe"). The output is a
    pure function of ``(n, split, seed)``, and ``generate_records(k, ...)`` is a
    prefix of ``generate_records(n, ...)`` for ``k <= n``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown synthetic split {split!r}; use one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"number of synthetic rows must be a non-negative int, got {n!r}; "
                        "pass e.g. n=256")
    rng = _rng_for(split, seed)
    rows: list[dict[str, str]] = []
    for index in range(1, n + 1):
        case = _draw_case(rng)
        rows.append({
            "id": f"synth-{split}-{index:06d}",
            "question": _question(rng, case),
            "abstract": _abstract(rng, case),
            "long_answer": _long_answer(rng, case),
            "final_decision": case.decision,
        })
    return rows


def train_corpus(
    n: int,
    seed: int = 0,
    *,
    template: str = DEFAULT_TEMPLATE,
    end_marker: str = END_MARKER,
) -> list[str]:
    """Render ``n`` synthetic training documents for drafter training.

    Each document is the prompt exactly as the benchmark renders it, a space, the
    ``long_answer`` and ``end_marker`` - so the drafter learns the eval prompt format.
    """
    return [
        render_prompt(template, row["question"], row["abstract"]) + " " + row["long_answer"]
        + end_marker
        for row in generate_records(n, split="train", seed=seed)
    ]
