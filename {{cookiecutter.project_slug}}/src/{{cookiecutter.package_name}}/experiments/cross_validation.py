"""``cv``: K-fold cross-validation, one ``fit`` per fold, and what the folds say together.

Each fold is a fit in ``runs/<name>/folds/<k>/`` with ``--data.init_args.folds K
--data.init_args.fold k``: the test split as a plain fit has it, fold k of the rest
validating, the others training. At its end a fold validates its best checkpoint once more
(callbacks.ValidationReports); this command gathers those into ``folds.csv``,
``cv_metrics.json``, ``oof_predictions.csv`` and ``label_issues.csv`` (and, for images,
``label_issues.png``). Stopped (SIGTERM, Ctrl+C), it exits 143; the same command again skips
the finished folds and resumes the others from their checkpoints.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import yaml

from . import launch, out_of_fold

# Every fold validates in full: its scores and out-of-fold predictions cover each sample.
WHOLE_VALIDATION = ["--trainer.limit_val_batches=1.0"]
SUSPECTS_SHOWN = 16  # images in label_issues.png


def main(prog: str, args: list[str]) -> int:
    parser = launch.experiment_parser(prog, __doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5, help="K, the number of folds (>= 2).")
    options, forwarded = parser.parse_known_args(args)
    if options.folds < 2:
        parser.error(f"--folds {options.folds}: cross-validation needs at least 2 folds")
    out = launch.experiment_dir(options.root, options.name, "cv")
    fold_dirs = [out / "folds" / str(k) for k in range(options.folds)]
    print(f"Cross-validation: {options.folds} folds in {out}")
    codes = run_folds(options.config, forwarded, fold_dirs, options.workers)
    if launch.STOPPED in codes.values():
        print(f"Stopped: run the same command again to resume ({out}).")
        return launch.STOPPED
    failed = {k: code for k, code in codes.items() if code != 0}
    if failed:
        for k, code in sorted(failed.items()):
            print(f"Fold {k} failed (exit {code}): see {log_of(out, k)}")
        return max(failed.values())
    summarise(out, fold_dirs)
    return 0


def log_of(out: Path, fold: int) -> Path:
    return out / "logs" / f"fold-{fold}.log"


def fold_command(
    configs: list[str], forwarded: list[str], fold_dirs: list[Path], k: int
) -> list[str]:
    """A new fit of fold ``k``, or the resumption of one that was stopped."""
    run_dir = fold_dirs[k]
    if (run_dir / "config.yaml").is_file():
        return launch.resume_command(run_dir)
    split = [f"--data.init_args.folds={len(fold_dirs)}", f"--data.init_args.fold={k}"]
    return launch.fit_command(configs, [*forwarded, *split, *WHOLE_VALIDATION], run_dir)


def run_folds(
    configs: list[str], forwarded: list[str], fold_dirs: list[Path], workers: int
) -> dict[int, int]:
    """Each unfinished fold's fit, ``workers`` at a time; their exit codes by fold."""
    pending = [k for k, d in enumerate(fold_dirs) if not out_of_fold.fold_finished(d)]
    done = len(fold_dirs) - len(pending)
    if done:
        print(f"{done} fold(s) finished before: not run again.")
    codes: dict[int, int] = {}
    lock = threading.Lock()
    with launch.Children() as children:

        def work(worker: int) -> None:
            env = launch.device_env(worker, workers)
            while True:
                with lock:
                    if not pending or children.stopping:
                        return
                    k = pending.pop(0)
                command = fold_command(configs, forwarded, fold_dirs, k)
                print(f"Fold {k}: {'resumed' if '--ckpt_path=last' in command else 'started'}")
                codes[k] = children.run(command, log_of(fold_dirs[k].parents[1], k), env)
                print(f"Fold {k}: exit {codes[k]}")

        launch.in_parallel(work, max(1, min(workers, len(pending) or 1)))
        if children.stopping:
            codes.update({k: launch.STOPPED for k in pending})
    return codes


def summarise(out: Path, fold_dirs: list[Path]) -> None:
    """The experiment's files from the folds' validation reports; the scores printed."""
    scores = out_of_fold.fold_scores(fold_dirs)
    (out / "cv_metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(out_of_fold.score_table(scores))
    predictions = out_of_fold.out_of_fold(fold_dirs)
    predictions[["id", "fold"]].to_csv(out / "folds.csv", index=False)
    predictions.to_csv(out / "oof_predictions.csv", index=False, float_format="%.6f")
    class_names = [c for c in predictions.columns if c not in ("id", "label", "predicted", "fold")]
    issues = out_of_fold.label_issues(predictions, class_names)
    issues.to_csv(out / "label_issues.csv", index=False)
    print(f"{len(issues)} of {len(predictions)} labels look wrong: {out / 'label_issues.csv'}")
    if len(issues) and (picture := suspects_picture(fold_dirs[0], issues, class_names)):
        print(f"The most suspect: {picture}")
    for name in ("cv_metrics.json", "folds.csv", "oof_predictions.csv"):
        print(f"  {out / name}")


def suspects_picture(run_dir: Path, issues: pd.DataFrame, class_names: list[str]) -> Path | None:
    """``label_issues.png`` beside ``run_dir``'s experiment: the top suspects with their
    given and suggested labels, when the samples are images; None otherwise."""
    datamodule = saved_datamodule(run_dir / "config.yaml")
    if len(datamodule.input_shape) != 3:  # (C, H, W): images
        return None
    import torch

    from .. import reports

    top = issues.head(SUSPECTS_SHOWN)
    images = datamodule.inputs_of(top["id"].tolist())
    given, suggested = ([class_names.index(c) for c in top[k]] for k in ("given", "suggested"))
    title = "Suspect labels: given → suggested"
    figure = reports.prediction_grid(
        images, torch.tensor(given), torch.tensor(suggested), class_names, title
    )
    return reports.publish_figure(figure, run_dir.parents[1] / "label_issues.png")


def saved_datamodule(config: Path):
    """The data module a fit's saved config describes, built as the command line builds it."""
    import lightning as L
    from jsonargparse import ArgumentParser

    saved = yaml.safe_load(config.read_text())
    data = saved["data"]
    data["init_args"] = {**data.get("init_args", {}), "seed": saved["seed_everything"]}
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    return parser.instantiate(parser.parse_object({"data": data})).data
