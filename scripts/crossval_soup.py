"""Cross-validate a soup of fine-tunes (``--members N``) beside its members and their ensemble.

For each fold (the same folds as ``sentiment-api crossval``, from ``crossval.fold_splits``) this
trains the recipe's ``N`` members from one starting point, exactly as ``train --members N`` does
(seeds ``seed``, ``seed + 1000``, ...; the first stage trained once and reused), and keeps the
held-out probabilities of

- each member alone (``member-1`` is the single-model recipe),
- the mean of the members' probabilities (``ensemble``: N times the engine, not shippable as is),
- the uniform average of their weights (``soup``: what ``train --members N`` ships);

and the ensemble's probabilities on the fold's training rows (``teacher.txt``, CSV), the soft
labels a distilled student learns from: ``--students`` trains, for every finished fold that has
none yet, one model by the recipe (its first stage, its seed) on the fold's training rows with the
ensemble's probabilities as soft targets (``distil_weight`` of the loss, ``train --teacher``'s
loss), and adds it as the variant ``student``. A fold being distilled is claimed by a
``student.lock`` directory, so two processes can run ``--students`` side by side.

Each fold is written to ``OUT/fold-K/`` as soon as it is done, so runs can be split across
processes (``--folds-to-run 1,3,5`` and ``2,4`` side by side) and resumed. ``--summarise`` reads
every finished fold and prints, for each variant, the mean ± sd over folds, the same with the
recipe's own logit offsets, and the nested estimate with per-label logit offsets tuned on the other
folds' predictions (as ``crossval`` does); ``OUT/variants.png`` plots the nested figures.

    python scripts/crossval_soup.py ../shared/data/nlp_data.xlsx OUT --recipe CARD_OR_JSON \
        --members 3 --folds-to-run 1,3,5
    python scripts/crossval_soup.py ../shared/data/nlp_data.xlsx OUT --recipe CARD_OR_JSON --students
    python scripts/crossval_soup.py ../shared/data/nlp_data.xlsx OUT --recipe CARD_OR_JSON --summarise

``--recipe`` takes a model card (its ``hyperparameters``) or a JSON ``TrainingConfig``; its logit
offsets are dropped (offsets are tuned here, per variant) and ``--threads`` overrides its threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_api.crossval import Spread, fold_splits, tune_offsets_nested
from sentiment_api.data import LABEL, TEXT, DataSpec, load_splits
from sentiment_api.evaluation import HEADLINE, Scores, score_probabilities
from sentiment_api.files import write_text_atomic
from sentiment_api.plots import pyplot, save_png
from sentiment_api.recipe import TrainingConfig
from sentiment_api.training import average_states
from sentiment_api.training.distillation import soft_columns
from sentiment_api.training.pipeline import fine_tune, member_seeds


def load_recipe(path: Path, threads: int | None) -> TrainingConfig:
    """The recipe from a model card or a JSON config, without logit offsets."""
    raw = json.loads(path.read_text())
    config = TrainingConfig.model_validate(raw.get("hyperparameters", raw))
    return config.model_copy(update={"logit_offsets": {}, "members": 1, "threads": threads or config.threads})


def run_fold(
    split, labels, config: TrainingConfig, members: int, normaliser: str, stage_dir: Path, out: Path
):
    """Train the fold's members, write every variant's held-out probabilities to ``out``."""
    started = time.perf_counter()
    texts = split.held[TEXT].tolist()
    seen = pd.concat([split.fit, split.inner], ignore_index=True)  # for a distilled student, later
    probabilities, states, epochs, teacher = {}, [], [], []
    first, start_path = None, None
    for number, seed in enumerate(member_seeds(config.model_copy(update={"members": members})), start=1):
        member_config = config.model_copy(update={"seed": seed})
        if start_path is not None:  # later members start where the first did (its first stage)
            member_config = member_config.model_copy(
                update={"corpora": [], "base_model": start_path, "base_label_map": {}}
            )
        trained = fine_tune(split.fit, split.inner, labels, member_config, normaliser, stage_dir=stage_dir)
        start_path = start_path or trained.start.model.name_or_path
        first = first or trained
        probabilities[f"member-{number}"], _ = trained.classifier.probabilities_of_clean(texts, 128)
        states.append({k: v.detach().clone() for k, v in trained.start.model.state_dict().items()})
        teacher.append(trained.classifier.probabilities_of_clean(seen[TEXT].tolist(), 128)[0])
        epochs.append(trained.fitted.best_epoch)
    probabilities["ensemble"] = np.mean([probabilities[f"member-{n}"] for n in range(1, members + 1)], axis=0)
    first.start.model.load_state_dict(average_states(states))
    first.start.model.eval()
    probabilities["soup"], _ = first.classifier.probabilities_of_clean(texts, 128)
    out.mkdir(parents=True, exist_ok=True)
    for variant, values in probabilities.items():
        write_variant(out / f"{variant}.csv", split, labels, values)
    seen[soft_columns(labels)] = np.mean(teacher, axis=0)
    write_text_atomic(out / "teacher.txt", seen.to_csv(index=False))  # not a variant: no .csv suffix
    done = {
        "fold": split.fold,
        "best_epochs": epochs,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    write_text_atomic(out / "done.json", json.dumps(done) + "\n")
    print(f"fold {split.fold}: done in {done['minutes']} min, best epochs {epochs}", flush=True)


def run_student(split, labels, config: TrainingConfig, normaliser: str, stage_dir: Path, out: Path) -> None:
    """Distil the fold's ensemble (``teacher.txt``) into one model by the recipe; write ``student.csv``."""
    started = time.perf_counter()
    teacher = pd.read_csv(out / "teacher.txt", keep_default_na=False)
    fit = split.fit.reset_index(drop=True)
    if teacher[TEXT].head(len(fit)).tolist() != fit[TEXT].tolist():
        raise SystemExit(f"{out}: teacher.txt does not start with this fold's training rows")
    columns = soft_columns(labels)
    fit[columns] = teacher[columns].head(len(fit)).to_numpy()
    trained = fine_tune(fit, split.inner, labels, config, normaliser, stage_dir=stage_dir)
    values, _ = trained.classifier.probabilities_of_clean(split.held[TEXT].tolist(), 128)
    write_variant(out / "student.csv", split, labels, values)
    done = json.loads((out / "done.json").read_text())
    done["student"] = {
        "best_epoch": trained.fitted.best_epoch,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "distil_weight": config.distil_weight,
    }
    write_text_atomic(out / "done.json", json.dumps(done) + "\n")
    print(f"fold {split.fold}: student done in {done['student']['minutes']} min", flush=True)


def write_variant(path: Path, split, labels, values: np.ndarray) -> None:
    """One variant's held-out probabilities, beside each row's index, fold, text and label."""
    rows = split.held[[TEXT, LABEL]].copy()
    rows.insert(0, "index", split.held_rows)
    rows.insert(1, "fold", split.fold)
    rows[soft_columns(labels)] = values
    write_text_atomic(path, rows.to_csv(index=False))


def summarise(out: Path, labels: list[str], criterion: str, recipe_offsets: dict[str, float]) -> str:
    """Markdown: per variant, mean ± sd over folds, per-label recall, the scores with the recipe's own
    logit offsets, and the nested estimate with offsets tuned per variant; ``variants.png`` plots it."""
    fold_dirs = sorted(d for d in out.glob("fold-*") if (d / "done.json").is_file())
    variants = sorted({f.stem for d in fold_dirs for f in d.glob("*.csv")}, key=lambda v: (v[0] != "m", v))
    shift = np.array([recipe_offsets.get(label, 0.0) for label in labels])
    told_offsets = ", ".join(f"{k.split()[0]} {v:+.1f}" for k, v in recipe_offsets.items() if v) or "none"
    lines = [
        f"{len(fold_dirs)} folds; nested: logit offsets tuned ({criterion}) on the other folds' predictions",
        "",
        "| variant | accuracy | balanced accuracy | macro-F1 | recall per label | "
        f"with the recipe's offsets ({told_offsets}): acc / bal / F1 | offsets tuned on all folds "
        "| nested acc / bal / F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plotted: dict[str, dict[str, Spread]] = {}
    by_fold: dict[str, dict[int, Scores]] = {}  # with the recipe's offsets, for the paired differences
    for variant in variants:
        files = [d / f"{variant}.csv" for d in fold_dirs if (d / f"{variant}.csv").is_file()]
        partial = "" if len(files) == len(fold_dirs) else f" ({len(files)} folds)"
        oof = pd.concat([pd.read_csv(f, keep_default_na=False) for f in files], ignore_index=True)

        plain, offset = fold_scores(oof, labels), fold_scores(oof, labels, shift)
        by_fold[variant] = dict(zip(sorted(oof["fold"].unique()), offset, strict=True))
        spread = {name: Spread.of([getattr(s, name) for s in plain]) for name in HEADLINE}
        with_offsets = " / ".join(f"{Spread.of([getattr(s, name) for s in offset])}" for name in HEADLINE)
        recall = " / ".join(f"{Spread.of([s.per_class[x].recall for s in plain]).mean:.3f}" for x in labels)
        if len(files) < 2:  # nothing to tune a fold's offsets on
            nested, offsets = "—", "—"
        else:
            tuned = tune_offsets_nested(oof, labels, criterion)
            plotted[variant] = tuned.nested
            nested = " / ".join(f"{tuned.nested[name]}" for name in HEADLINE)
            offsets = ", ".join(f"{k.split()[0]} {v:+.1f}" for k, v in tuned.offsets.items() if v) or "none"
        lines.append(
            f"| {variant}{partial} | {spread['accuracy']} | {spread['balanced_accuracy']} | "
            f"{spread['macro_f1']} | {recall} | {with_offsets} | {offsets} | {nested} |"
        )
    lines += ["", *paired_differences(by_fold, "member-1")]
    epochs = [json.loads((d / "done.json").read_text()) for d in fold_dirs]
    lines += ["", "best epochs per fold: " + "; ".join(f"{e['fold']}: {e['best_epochs']}" for e in epochs)]
    lines += ["minutes per fold: " + ", ".join(str(e["minutes"]) for e in epochs)]
    students = [e for e in epochs if "student" in e]
    if students:
        told = (f"{e['fold']}: {e['student']['best_epoch']}, {e['student']['minutes']}" for e in students)
        lines += ["students (best epoch, minutes): " + "; ".join(told)]
    if plotted:
        lines += [f"plot: {plot_variants(plotted, len(fold_dirs), out / 'variants.png')}"]
    return "\n".join(lines)


def paired_differences(by_fold: dict[str, dict[int, Scores]], baseline: str) -> list[str]:
    """Each variant minus ``baseline``, fold by fold on the folds both have: mean ± sd of the
    differences (fold-to-fold spread cancels out, so small differences show)."""
    lines = [
        f"| variant − {baseline}, same folds, recipe's offsets | folds | accuracy | balanced accuracy "
        "| macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for variant, scores in by_fold.items():
        common = sorted(set(scores) & set(by_fold.get(baseline, {})))
        if variant == baseline or not common:
            continue
        cells = []
        for name in HEADLINE:
            differences = [getattr(scores[f], name) - getattr(by_fold[baseline][f], name) for f in common]
            sd = float(np.std(differences, ddof=1)) if len(differences) > 1 else 0.0
            cells.append(f"{np.mean(differences):+.3f} ± {sd:.3f}")
        lines.append(f"| {variant} | {len(common)} | {' | '.join(cells)} |")
    return lines


def fold_scores(oof: pd.DataFrame, labels: list[str], shift: np.ndarray | None = None) -> list[Scores]:
    """Each fold's scores, with ``shift`` added to the log-probabilities when given."""
    scores = []
    for _, part in oof.groupby("fold"):
        p = part[soft_columns(labels)].to_numpy()
        p = p if shift is None else np.log(np.clip(p, 1e-12, 1.0)) + shift
        scores.append(score_probabilities(part[LABEL].tolist(), p, labels))
    return scores


def plot_variants(nested: dict[str, dict[str, Spread]], folds: int, path: Path) -> Path:
    """Each variant's nested accuracy, balanced accuracy and macro-F1: mean bars, ± sd whiskers."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(9, 4), dpi=120)
    width = 0.8 / len(HEADLINE)
    for k, name in enumerate(HEADLINE):
        means = [nested[v][name].mean for v in nested]
        sds = [nested[v][name].sd for v in nested]
        xs = [i + (k - 1) * width for i in range(len(nested))]
        axes.bar(xs, means, width, yerr=sds, capsize=3, label=name.replace("_", " "))
    axes.set_xticks(range(len(nested)), list(nested))
    low = min(spread.mean - spread.sd for scores in nested.values() for spread in scores.values())
    axes.set_ylim(max(0.0, round(low - 0.05, 1)), 1.0)
    axes.legend(loc="upper left", fontsize=8, ncols=3)
    axes.set_title(
        f"{folds}-fold cross-validation, logit offsets tuned on the other folds (nested)", fontsize=10
    )
    return save_png(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cv-seed", type=int, default=0)
    parser.add_argument("--folds-to-run", default="", help="comma-separated fold numbers (default: all)")
    parser.add_argument("--stage-dir", type=Path, default=Path("runs/stages"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--criterion", default="f1_and_balanced")
    parser.add_argument("--students", action="store_true", help="distil each finished fold's ensemble")
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    spec = DataSpec()
    data, splits = load_splits(args.data, spec)
    if args.summarise:
        raw = json.loads(args.recipe.read_text())
        offsets = TrainingConfig.model_validate(raw.get("hyperparameters", raw)).logit_offsets
        print(summarise(args.out, data.labels, args.criterion, offsets))
        return
    config = load_recipe(args.recipe, args.threads)
    wanted = {int(k) for k in args.folds_to_run.split(",") if k} or set(range(1, args.folds + 1))
    pool = pd.concat([splits.train, splits.validation], ignore_index=True)
    for split in fold_splits(pool, args.folds, args.cv_seed):
        target = args.out / f"fold-{split.fold}"
        if args.students:
            if (target / "done.json").is_file() and not (target / "student.csv").is_file():
                try:
                    (target / "student.lock").mkdir()
                except FileExistsError:
                    continue  # another process distils this fold
                print(f"fold {split.fold}/{args.folds}: student", flush=True)
                run_student(split, data.labels, config, spec.normaliser, args.stage_dir, target)
                (target / "student.lock").rmdir()  # a run that failed leaves it: remove it to retry
            continue
        if split.fold not in wanted or (target / "done.json").is_file():
            continue
        print(f"fold {split.fold}/{args.folds}: {split}", flush=True)
        run_fold(split, data.labels, config, args.members, spec.normaliser, args.stage_dir, target)


if __name__ == "__main__":
    main()
