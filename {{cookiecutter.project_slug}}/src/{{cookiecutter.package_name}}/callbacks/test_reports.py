"""The test's reports, written when any test ends: from the command line or ``trainer.test()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from .. import attribution, evaluation, insides, reports
from ..strategies import holds_whole_model


class TestReports(L.Callback):
    """``test_metrics.json``, the confusion matrix, per-class metrics, the reliability diagram,
    per-group metrics (when the data names groups), attributions of a few test samples and
    what the network does inside (``insides``: dead units, filters, activation maps).

    Args:
        dirpath: Where they go; None: the trainer's ``default_root_dir``. The command line
            sets the run directory for ``fit`` and a new ``outputs/test-<time>/`` for each
            later ``test``, so no test overwrites another's reports.
    """

    __test__ = False  # a callback, not a pytest class

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        out = Path(self.dirpath or trainer.default_root_dir)
        logged = trainer.callback_metrics.items()
        metrics = {k: float(v) for k, v in logged if k.startswith("test/")}
        metrics |= self.report_groups(trainer, pl_module, out)
        reports.save_metrics(metrics, out / "test_metrics.json")
        datamodule = trainer.datamodule
        matrix = getattr(pl_module, "confusion_matrix", None)
        names = getattr(datamodule, "class_names", None)
        if matrix is not None:
            names = names or [str(i) for i in range(len(matrix))]
            figure = reports.confusion_figure(matrix, names, "Test confusion matrix")
            reports.publish_figure(figure, out / "plots" / "confusion_matrix.png", trainer.loggers)
            rows = evaluation.per_class_table(matrix, names)
            reports.save_table(rows, out / "per_class_metrics.csv")
            print(reports.format_table(rows))
        bins = getattr(pl_module, "calibration_bins", None)
        if bins is not None and "test/ece" in metrics:
            figure = reports.reliability_figure(bins, metrics["test/ece"])
            reports.publish_figure(figure, out / "plots" / "reliability.png", trainer.loggers)
        if holds_whole_model(trainer.strategy) and datamodule is not None:
            attribution.explain(pl_module, datamodule, out, trainer.loggers)
            insides.inspect(pl_module, datamodule, out, trainer.loggers)
        print("Test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        print(f"Test reports: {out.resolve()}")

    @staticmethod
    def report_groups(
        trainer: L.Trainer, pl_module: L.LightningModule, out: Path
    ) -> dict[str, float]:
        """``group_metrics.json`` and a printed table when the data names groups; returns
        the largest gaps as test metrics."""
        counts = getattr(pl_module, "group_confusion", None)
        datamodule = trainer.datamodule
        if counts is None or datamodule is None:
            return {}
        rows = evaluation.per_group_table(counts, datamodule.group_names, datamodule.class_names)
        threshold, min_size = datamodule.max_group_gap, datamodule.min_group_size
        gaps = evaluation.largest_gaps(rows, threshold, min_size)
        summary: dict[str, Any] = {"groups": rows, "gaps": gaps, "max_group_gap": threshold}
        summary["min_group_size"] = min_size
        path = out / "group_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(reports.format_table(rows) + "\n" + evaluation.format_gaps(gaps))
        flagged = [metric for metric, gap in gaps.items() if gap["flagged"]]
        if flagged:
            rank_zero_warn(
                f"Test metrics differ between groups by more than max_group_gap={threshold} "
                f"({', '.join(flagged)}): see {path}"
            )
        gap_metrics = {
            f"test/group_gap/{metric}": gap["gap"]
            for metric, gap in gaps.items()
            if gap["gap"] is not None
        }
        for logger in trainer.loggers:
            logger.log_metrics(gap_metrics)
        return gap_metrics
