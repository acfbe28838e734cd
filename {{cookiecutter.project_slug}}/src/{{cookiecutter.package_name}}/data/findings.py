"""What the data checks found, how it is reported, and the error that stops a run early."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

Severity = Literal["info", "warning", "error"]
SHOWN_PER_CHECK = 5  # the console lists this many findings per check; profile.json has all


@dataclass(frozen=True)
class Finding:
    """One observation about the data: a check's name, how bad it is, where, and what fit does.

    ``subject`` is a file path, a column, or the dataset as a whole; ``action`` is the
    cleaning rule applied to it (``keep`` when nothing is done).
    """

    check: str
    severity: Severity
    subject: str
    message: str
    action: str = "keep"

    def __post_init__(self) -> None:
        if self.action == "fail":  # a finding that stops the run is an error, whatever its check
            object.__setattr__(self, "severity", "error")


class DataError(ValueError):
    """The data can't be trained on as it is; raised before the first training step."""


def failures(findings: Iterable[Finding]) -> list[Finding]:
    """Findings whose rule is ``fail``, plus errors no rule can clean."""
    return [f for f in findings if f.action == "fail" or f.severity == "error"]


def listing(findings: list[Finding], limit: int = 20) -> str:
    lines = [f"  [{f.check}] {f.subject}: {f.message}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (see profile.json)")
    return "\n".join(lines)


def raise_on_failures(findings: Iterable[Finding], datamodule: type) -> None:
    """Stop with every failing finding named, and how to relax the rule that stopped it."""
    failing = failures(findings)
    if failing:
        path = f"{datamodule.__module__}.{datamodule.__qualname__}"
        raise DataError(
            f"The data can't be trained on as it is:\n{listing(failing)}\n"
            "Fix the data, or change the rule for the check in brackets with "
            "--data.init_args.rules.<check> (every rule and its choices: "
            f"`python -m {path.partition('.')[0]} fit --data.help {path}`)."
        )


def nothing_usable(source: str, findings: list[Finding]) -> DataError:
    """The error for data that holds no usable training sample after cleaning."""
    serious = [f for f in findings if f.severity != "info"]
    return DataError(f"No usable training sample in {source}:\n{listing(serious)}")


def save_profile(path: Path, dataset: Mapping[str, Any], findings: list[Finding]) -> Path:
    """``profile.json``: the dataset's counts and every finding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"dataset": dict(dataset), "findings": [asdict(f) for f in findings]}
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def print_findings(findings: list[Finding], console: Console | None = None) -> None:
    """The findings, warnings and errors first, a few per check. One finding is a heading
    (severity, check, subject, action) over its message, so that the message has the whole
    width and stays readable in an 80-column terminal."""
    console = console or Console()
    if not findings:
        console.print("Data profile: no findings.")
        return
    order = {"error": 0, "warning": 1, "info": 2}
    table = Table.grid(padding=(0, 1))
    table.add_column("severity", no_wrap=True)
    table.add_column("finding", overflow="fold")
    shown: Counter[str] = Counter()
    total = Counter(f.check for f in findings)
    for finding in sorted(findings, key=lambda f: order[f.severity]):
        shown[finding.check] += 1
        if shown[finding.check] <= SHOWN_PER_CHECK:
            heading = f"[bold]{finding.check}[/bold] · {escape(finding.subject)} → {finding.action}"
            table.add_row(finding.severity, f"{heading}\n{escape(finding.message)}")
        elif shown[finding.check] == SHOWN_PER_CHECK + 1:
            more = total[finding.check] - SHOWN_PER_CHECK
            table.add_row("", f"[bold]{finding.check}[/bold]: {more} more in profile.json")
    console.print(f"Data profile ({len(findings)} findings)")
    console.print(table)
