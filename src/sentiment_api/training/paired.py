"""Two recipes compared fold by fold: the paired difference of their scores on the same folds.

Folds differ from each other more than good recipes differ from each other, so two recipes'
means ± sd overlap even when one wins on every fold. Scored on the same folds (same rows, same
fold count and seed), the difference on each fold removes what the folds share; its mean and
standard error (sd / √k) say whether the candidate wins by more than the folds' noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pydantic import BaseModel, Field

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.metrics import HEADLINE
from sentiment_api.training.crossval import CrossValidation, FoldScores


class Difference(BaseModel):
    """Candidate minus base on one figure: fold by fold, the mean and its standard error."""

    per_fold: list[float]
    mean: float
    se: float = Field(description="Standard error of the mean difference: sd over folds / √folds.")

    @classmethod
    def of(cls, values: Sequence[float]) -> Difference:
        """The paired difference from its fold-by-fold ``values``."""
        se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
        return cls(
            per_fold=[round(v, 4) for v in values], mean=round(statistics.mean(values), 4), se=round(se, 4)
        )

    @property
    def beats(self) -> bool:
        """The candidate is better by more than one standard error."""
        return self.mean > self.se

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ± {self.se:.4f}"


class Comparison(BaseModel):
    """A candidate recipe against a base over the same folds: plain and with nested offsets."""

    base: str
    candidate: str
    plain: dict[str, Difference]
    nested: dict[str, Difference] = Field(
        default_factory=dict, description="With each fold's offsets tuned on the other folds (both runs)."
    )


def compare(base: CrossValidation, candidate: CrossValidation, names: tuple[str, str]) -> Comparison:
    """``candidate`` minus ``base``, fold by fold; refused unless both scored the same folds."""
    same = ("data_file", "rows", "folds", "seed")
    if any(getattr(base, name) != getattr(candidate, name) for name in same):
        facts = {n: (getattr(base, n), getattr(candidate, n)) for n in same}
        raise ConfigError(f"{names[0]} and {names[1]} were not scored on the same folds: {facts}")
    return compare_scores(base, candidate, names)


def compare_scores(base: FoldScores, candidate: FoldScores, names: tuple[str, str]) -> Comparison:
    """``candidate`` minus ``base`` for two sets of per-fold models known to share their folds."""
    folds = [r.fold for r in base.results]
    if [r.fold for r in candidate.results] != folds:
        raise ConfigError(f"{names[0]} and {names[1]} have not finished the same folds")
    pairs = list(zip(base.results, candidate.results, strict=True))
    plain = {
        name: Difference.of([getattr(c.scores, name) - getattr(b.scores, name) for b, c in pairs])
        for name in HEADLINE
    }
    nested = {}
    if base.offsets and candidate.offsets and base.offsets.per_fold and candidate.offsets.per_fold:
        tuned = list(zip(base.offsets.per_fold, candidate.offsets.per_fold, strict=True))
        nested = {name: Difference.of([c[name] - b[name] for b, c in tuned]) for name in HEADLINE}
    return Comparison(base=names[0], candidate=names[1], plain=plain, nested=nested)


def format_comparison(comparison: Comparison) -> str:
    """Markdown: one row per figure, plain and nested, the difference and whether it is beyond noise."""
    lines = [
        f"{comparison.candidate} minus {comparison.base}, fold by fold (mean ± standard error)",
        "",
        "| figure | scores | difference | per fold | beyond one SE |",
        "|---|---|---|---|---|",
    ]
    for kind, differences in (("plain", comparison.plain), ("nested offsets", comparison.nested)):
        for name, difference in differences.items():
            folds = ", ".join(f"{v:+.3f}" for v in difference.per_fold)
            verdict = (
                "better" if difference.beats else ("worse" if -difference.mean > difference.se else "no")
            )
            lines.append(f"| {name} | {kind} | {difference} | {folds} | {verdict} |")
    return "\n".join(lines)
