"""Streaming shards: written by `shard` from the checked data, streamed by every DDP rank and
loader worker once an epoch, trained on and resumed, and bad input refused by name."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from {{ cookiecutter.package_name }}.data import shards, streaming
from {{ cookiecutter.package_name }}.data.image import ImageDataModule
from {{ cookiecutter.package_name }}.data.split import SPLITS

from .conftest import CONFIG, NO_LOGGER, PACKAGE, PROJECT, QUICK, TRAINERS, newest_output, run
from .test_image_data import write_folder

litdata = pytest.importorskip("litdata")
STREAMING = PROJECT / "configs" / "streaming.yaml"
BATCH = 64  # the shipped batch size: 1257 training digits make 19 batches, 9 per rank of 2


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of the embedded digits, written by the `shard` subcommand."""
    root = tmp_path_factory.mktemp("digits")
    run("shard", root / "runs", "--run.name=shard", f"--output_dir={root / 'shards'}", *NO_LOGGER)
    return root / "shards"


def stored(shards: Path, split: str) -> list[dict]:
    dataset = litdata.StreamingDataset(str(shards / split))
    return [dataset[i] for i in range(len(dataset))]


def test_shard_writes_the_checked_splits_of_the_digits(digits: Path) -> None:
    reference = ImageDataModule(profile=False)  # the shipped config's seed, 42
    data, meta = reference.prepared, json.loads((digits / "meta.json").read_text())
    assert meta["counts"] == {split: data.splits.count(split) for split in SPLITS}
    assert (meta["fingerprint"], meta["seed"]) == (data.fingerprint, 42)
    assert (meta["class_names"], meta["input_shape"]) == (reference.class_names, [1, 8, 8])
    mean, std = reference.train_statistics()
    assert meta["train_mean"] == pytest.approx(mean.flatten().tolist())
    assert meta["train_std"] == pytest.approx(std.flatten().tolist())
    for split in SPLITS:
        samples, dataset = stored(digits, split), reference.dataset(split)
        ids = [i for i, s in zip(data.ids, data.splits, strict=True) if s == split]
        assert sorted(s["id"] for s in samples) == sorted(ids)
        for sample in samples:  # each as the checked module serves it
            assert sample["id"] == ids[sample["index"]]
            assert (sample["image"] == dataset.pixels([sample["index"]])[0]).all()
            assert sample["label"] == int(dataset.labels[sample["index"]])
    assert (digits.parent / "runs" / "shard" / "split_manifest.csv").is_file()


def test_shard_writes_a_folder_of_images(tmp_path: Path) -> None:
    images, shards = write_folder(tmp_path / "images"), tmp_path / "shards"
    run(
        "shard", tmp_path / "runs", f"--data.init_args.root={images}",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}", f"--output_dir={shards}", *NO_LOGGER,
    )  # fmt: skip
    meta = json.loads((shards / "meta.json").read_text())
    reference = ImageDataModule(root=images, cache_dir=None, profile=False)
    assert meta["counts"] == {s: reference.prepared.splits.count(s) for s in SPLITS}
    assert meta["input_shape"] == [3, 16, 16] and meta["class_names"] == ["0", "1", "2"]
    assert meta["photos"] is True  # horizontal flips by default, as for the folder itself
    assert len(stored(shards, "train")) == meta["counts"]["train"]
    with pytest.raises(FileExistsError, match="holds shards already"):
        run("shard", tmp_path / "runs", f"--output_dir={shards}", *NO_LOGGER)


# One DDP rank: two epochs of its train and val loaders with 2 workers, as the sample ids
# they yield, and its training steps.
RANK = """
import json, sys
import torch.distributed as dist
from PACKAGE.data.streaming import StreamingImageDataModule, sample_id
dist.init_process_group("gloo")
module = StreamingImageDataModule(sys.argv[1], batch_size=int(sys.argv[3]), num_workers=2)
seen = dict(steps=len(module.train_dataloader()))
for split in ("train", "val"):
    loader = module.loader(split, training=split == "train", fields=sample_id)
    seen[split] = [list(loader) for epoch in range(2)]
json.dump(seen, open(sys.argv[2], "w"))
dist.destroy_process_group()
""".replace("PACKAGE", PACKAGE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "environment",
    [{}, {"LITDATA_POSIX_FAST": "1", "NNODES": "2"}],
    ids=["local-disk", "parallel-fs-two-nodes"],  # LitData's paths that this module corrects
)
def test_two_ranks_two_workers_see_each_sample_once_an_epoch(
    digits: Path, tmp_path: Path, environment: dict
) -> None:
    env = os.environ | environment | {"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"}
    env["MASTER_PORT"] = str(free_port())
    ranks = []
    for rank in range(2):
        command = [sys.executable, "-c", RANK, str(digits), str(tmp_path / f"{rank}.json")]
        command.append(str(BATCH))
        env["RANK"] = str(rank)
        ranks.append(subprocess.Popen(command, cwd=PROJECT, env=dict(env), stderr=subprocess.PIPE))
    for process in ranks:
        assert process.wait(timeout=120) == 0, process.stderr.read()[-3000:].decode()
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    data = ImageDataModule(profile=False).prepared
    ids = {s: {i for i, x in zip(data.ids, data.splits, strict=True) if x == s} for s in SPLITS}
    per_rank = len(ids["train"]) // BATCH // 2  # 9: whole batches, as many for each rank
    assert [rank["steps"] for rank in seen] == [per_rank, per_rank]
    left_out = []
    for epoch in range(2):
        assert [len(rank["train"][epoch]) for rank in seen] == [per_rank, per_rank]
        assert all(len(b) == BATCH for rank in seen for b in rank["train"][epoch])
        train = [[i for batch in rank["train"][epoch] for i in batch] for rank in seen]
        assert not set(train[0]) & set(train[1])
        assert len(set(train[0] + train[1])) == len(train[0] + train[1]) == 2 * per_rank * BATCH
        left_out.append(ids["train"] - set(train[0] + train[1]))
        assert len(left_out[-1]) == len(ids["train"]) - 2 * per_rank * BATCH == 105
        val = [i for rank in seen for batch in rank["val"][epoch] for i in batch]
        assert sorted(val) == sorted(ids["val"])  # every validation sample once
        assert len(seen[0]["val"][epoch]) == len(seen[1]["val"][epoch])
    assert seen[0]["train"][0] != seen[0]["train"][1]  # a new order every epoch
    assert left_out[0] != left_out[1]  # and other samples left out


@pytest.fixture(scope="module")
def fitted_on_shards(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`fit` on the shards by two DDP processes: the runs' root and what the command printed."""
    root = tmp_path_factory.mktemp("runs")
    command = [sys.executable, "-m", PACKAGE, "fit", f"--config={CONFIG}", f"--config={STREAMING}"]
    command += [f"--data.init_args.input_dir={digits}", f"--run.root={root}", "--run.name=ddp"]
    command += [*QUICK, f"--trainer={TRAINERS / 'ddp_cpu.yaml'}", *NO_LOGGER]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result.stderr + result.stdout


def test_fit_on_shards_with_two_ddp_processes(fitted_on_shards, digits: Path) -> None:
    root, printed = fitted_on_shards
    assert "MEMBER: 2/2" in printed
    assert [p.name for p in root.iterdir()] == ["ddp"]  # one run directory for both
    metrics = json.loads((root / "ddp" / "test_metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1
    shards = json.loads((root / "ddp" / "shards.json").read_text())
    assert shards["input_dir"] == str(digits)


def test_a_model_fitted_on_shards_predicts_new_image_files(fitted_on_shards, tmp_path) -> None:
    """The shards carried the image module's fitted state, and so does the checkpoint: the
    shipped image config reads it there (as export and serve do) without the shards."""
    run_dir = fitted_on_shards[0] / "ddp"
    inbox = write_folder(tmp_path / "inbox", per_class=2)
    checkpoint = f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    run("predict", tmp_path, *NO_LOGGER, checkpoint, f"--data.predict_root={inbox}")
    rows = list(csv.DictReader(newest_output(run_dir, "predictions.csv").open()))
    expected = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*.png"))
    assert sorted(row["id"] for row in rows) == expected
    assert all(row["predicted"] in [str(c) for c in range(10)] for row in rows)


class StopAtStep(L.Callback):
    """Ctrl+C at ``step``, mid-epoch; remembers the (epoch, batch) of the steps it saw."""

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append((trainer.current_epoch, batch_idx))
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_stopped_mid_epoch_then_resumed_ends_as_an_uninterrupted_run(
    digits: Path, tmp_path: Path
) -> None:
    def fit(name: str, *args: str):
        streaming = [f"--config={STREAMING}", f"--data.init_args.input_dir={digits}"]
        short = ["--trainer.limit_train_batches=6", f"--run.name={name}"]
        return run("fit", tmp_path, *streaming, *short, *NO_LOGGER, *args)

    whole = fit("whole")
    stop = json.dumps({"class_path": f"{__name__}.StopAtStep", "init_args": {"step": 8}})
    with pytest.raises(SystemExit):
        fit("cut", f"--trainer.callbacks+={stop}")
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved["global_step"] == 8 and loader["num_samples_yielded"] == 2 * BATCH
    cut = run("fit", tmp_path, f"--config={tmp_path / 'cut' / 'config.yaml'}", "--ckpt_path=last")
    (steps,) = [c.seen for c in cut.trainer.callbacks if isinstance(c, StopAtStep)]  # saved one
    assert steps == [(1, 2), (1, 3), (1, 4), (1, 5)]  # the rest of the epoch, not all of it
    assert cut.trainer.global_step == whole.trainer.global_step == 12
    expected = whole.trainer.lightning_module.state_dict()
    for name, tensor in cut.trainer.lightning_module.state_dict().items():
        assert torch.equal(tensor, expected[name]), name  # same batches, same draws

    ckpt = f"--ckpt_path={tmp_path / 'whole' / 'checkpoints' / 'last.ckpt'}"
    tested = run("test", tmp_path, f"--config={tmp_path / 'whole' / 'config.yaml'}", ckpt)
    run("predict", tmp_path, f"--config={tmp_path / 'whole' / 'config.yaml'}", ckpt)
    truth = {s["id"]: s["label"] for s in stored(digits, "test")}
    names = tested.datamodule.class_names
    rows = list(csv.DictReader(newest_output(tmp_path / "whole", "predictions.csv").open()))
    hits = [names.index(row["predicted"]) == truth[row["id"]] for row in rows]
    # Each row's id is the sample predicted: the same accuracy as `test` on the same batches.
    assert sum(hits) / len(hits) == pytest.approx(tested.trainer.callback_metrics["test/acc"])


def copy_shards(digits: Path, to: Path, **meta_changes) -> Path:
    shutil.copytree(digits, to)
    meta = json.loads((to / "meta.json").read_text())
    for key, value in meta_changes.items():
        meta[key] = meta["state"][key] = value
    (to / "meta.json").write_text(json.dumps(meta))
    return to


def test_bad_shard_folders_are_refused_by_name(digits: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no meta.json: it was not written by `\w+ shard`"):
        streaming.StreamingImageDataModule(str(tmp_path))
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match=r"a meta\.json of another kind"):
        streaming.StreamingImageDataModule(str(tmp_path))

    no_val = copy_shards(digits, tmp_path / "no-val")
    (no_val / "val" / "index.json").unlink()
    with pytest.raises(ValueError, match="The val split is missing"):
        streaming.StreamingImageDataModule(str(no_val)).setup("fit")
    fit = [f"--config={STREAMING}", f"--data.init_args.input_dir={no_val}", *NO_LOGGER]
    with pytest.raises(ValueError, match="The val split is missing"):
        run("fit", tmp_path, *fit)

    larger = copy_shards(digits, tmp_path / "larger", input_shape=[1, 16, 16])
    trained = streaming.StreamingImageDataModule(str(digits)).state_dict()
    with pytest.raises(ValueError, match=r"other data than the checkpoint's: input_shape \[1, 8"):
        streaming.StreamingImageDataModule(str(larger)).load_state_dict(trained)


def test_meta_json_travels_through_object_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The s3:// path through LitData's storage client, with a folder standing in for it."""

    class Bucket:
        def exists(self, url: str) -> bool:
            return (tmp_path / url.removeprefix("s3://")).is_file()

        def download_file(self, url: str, local: str) -> None:
            shutil.copy(tmp_path / url.removeprefix("s3://"), local)

        def upload_file(self, local: str, url: str) -> None:
            (tmp_path / url.removeprefix("s3://")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local, tmp_path / url.removeprefix("s3://"))

    monkeypatch.setattr(shards, "storage", lambda url: Bucket())
    assert shards.read_text("s3://bucket/shards/meta.json") is None
    shards.write_text("s3://bucket/shards/meta.json", '{"format": "?"}')
    assert json.loads(shards.read_text("s3://bucket/shards/meta.json")) == {"format": "?"}
    with pytest.raises(ValueError, match=r"s3://bucket/shards holds a meta\.json of another"):
        streaming.StreamingImageDataModule("s3://bucket/shards/")


def test_without_litdata_the_extra_is_named(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "litdata", None)  # `import litdata` raises ImportError
    install = r"pip install -e '\.\[streaming\]'"
    with pytest.raises(ImportError, match=install):
        streaming.StreamingImageDataModule(str(digits))
    with pytest.raises(ImportError, match=install):
        run("shard", tmp_path, f"--output_dir={tmp_path / 'shards'}", *NO_LOGGER)


@pytest.mark.parametrize("samples", [1, 9, 63, 64, 270, 271, 1000])
@pytest.mark.parametrize("ranks", [1, 2, 8])
def test_evaluation_batches_give_every_rank_as_many(samples: int, ranks: int) -> None:
    if samples < ranks:
        return  # refused with a message by the module
    size = streaming.evaluation_batch_size(samples, ranks, BATCH)
    per_rank = samples // size // ranks  # whole batches per rank, as LitData deals them
    assert 1 <= size <= BATCH and per_rank >= 1
    assert samples - per_rank * ranks * size < ranks * per_rank  # what the last rank adds
