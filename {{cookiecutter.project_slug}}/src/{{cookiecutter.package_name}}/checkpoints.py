"""Which checkpoint a resumed ``fit`` starts from: never a damaged one, and no unfinished
writes left behind.

``Trainer.save_checkpoint`` writes ``<name>.partial`` and renames it when it is whole, so a
SIGKILL mid-save leaves the previous checkpoint intact but the partial file (a checkpoint's
size) behind: the next ``fit`` removes it. A checkpoint damaged some other way (a copy cut
short, a full disk under another tool) would otherwise end in torch's ``PytorchStreamReader``
traceback: ``--ckpt_path last`` resumes from the newest intact checkpoint instead, and a
damaged file named explicitly is refused with the name of one that is intact.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info

PARTIAL = ".partial"  # the suffix Trainer.save_checkpoint writes under


def damage(path: Path) -> str | None:
    """Why ``path`` is no whole checkpoint, or None when it is one.

    torch saves a zip archive whose directory comes last: a write cut short has none. This
    reads the directory, not the tensors, so it costs milliseconds for any size.
    """
    if path.is_dir():  # DeepSpeed's folder of shards: left to DeepSpeed
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        return f"truncated or not a checkpoint: {path.stat().st_size} bytes, {error}"
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return "a zip archive, but not one torch saved"
    return None


def sweep_partial_writes(root: Path) -> None:
    """Remove the ``*.ckpt.partial`` files under ``root`` that a kill mid-save left."""
    left = sorted(root.rglob(f"*.ckpt{PARTIAL}")) if root.is_dir() else []
    if not left:
        return
    size = sum(path.stat().st_size for path in left)
    for path in left:
        path.unlink(missing_ok=True)
    names = ", ".join(str(path.relative_to(root)) for path in left)
    rank_zero_info(
        f"Removed {len(left)} unfinished checkpoint write(s) a kill mid-save left in {root} "
        f"({size / 2**20:.1f} MiB): {names}"
    )


def last_candidates(trainer: L.Trainer) -> set[Path]:
    """The files ``--ckpt_path last`` chooses among, as Lightning finds them."""
    paths = {cb.ckpt_path for cb in trainer.callbacks if isinstance(cb, OnExceptionCheckpoint)}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            paths |= callback._find_last_checkpoints(trainer)
    return {Path(path) for path in paths if path and Path(path).exists()}


def newest_intact(folders: Iterable[Path]) -> Path | None:
    """The newest whole ``*.ckpt`` in ``folders``."""
    found = {path for folder in set(folders) for path in folder.glob("*.ckpt") if path.is_file()}
    newest = sorted(found, key=lambda path: path.stat().st_mtime_ns, reverse=True)
    return next((path for path in newest if damage(path) is None), None)


def refuse_damaged(ckpt_path: str | Path | None) -> None:
    """A ValueError naming a damaged checkpoint file, and the run's newest intact one."""
    if ckpt_path is None or "://" in str(ckpt_path) or not Path(ckpt_path).is_file():
        return  # a keyword ("last"), remote, or missing (Lightning says so)
    path = Path(ckpt_path)
    if (reason := damage(path)) is None:
        return
    intact = newest_intact([path.parent, path.parent.parent])  # checkpoints/, the run's
    advice = f"use {intact} instead (--ckpt_path last picks the newest intact one)"
    raise ValueError(
        f"--ckpt_path {path} is damaged ({reason}): "
        + (advice if intact else "there is no intact checkpoint beside it.")
    )


def resume_from(trainer: L.Trainer, ckpt_path: str | Path) -> str | Path:
    """``ckpt_path``; for ``last`` whose newest file is damaged, the newest intact checkpoint
    of the run. A damaged file named explicitly is refused (:func:`refuse_damaged`)."""
    if str(ckpt_path) != "last":
        refuse_damaged(ckpt_path)
        return ckpt_path
    candidates = sorted(last_candidates(trainer), key=lambda path: path.stat().st_mtime_ns)
    if not candidates or (reason := damage(candidates[-1])) is None:
        return ckpt_path  # Lightning picks the same file (or starts afresh without one)
    # The folders of the last checkpoints (best-*.ckpt too) and the run's (hpc_ckpt_*.ckpt).
    chosen = newest_intact([*(path.parent for path in candidates), Path(trainer.default_root_dir)])
    if chosen is None:
        raise ValueError(
            f"{candidates[-1]} is damaged ({reason}), and the run has no intact checkpoint: "
            "start it again with another --run.name."
        )
    rank_zero_info(
        f"{candidates[-1]} is damaged ({reason}): resuming from the newest intact checkpoint, "
        f"{chosen}"
    )
    return str(chosen)
