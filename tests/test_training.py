"""The single-machine baseline, the config fields every training kind shares, evaluation, epoch
orders and result tables."""
import dataclasses
import os
import re

import pandas as pd
import pytest
import torch.nn.functional as F

from conftest import run_cli
from labkit import results
from labkit.data import datasets
from labkit.data.batches import epoch_order
from labkit.data_parallel import DPConfig
from labkit.errors import LabError
from labkit.model_parallel import MPConfig
from labkit.train import models, single
from labkit.train.config import TrainConfig
from labkit.train.loop import evaluate


def test_short_run_learns_and_records_rows(tmp_path):
    cfg = single.SingleConfig(epochs=2, train_subset=3000, threads=1, seed=0)
    rows = single.run(cfg, progress=False, log=lambda *_: None)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert rows[1]["test_acc"] > 80
    table = results.load("single")
    assert len(table) == 2
    for column in ("model", "seed", "lr", "batch_size", "torch", "cores", "wall_seconds", "samples_per_s"):
        assert column in table.columns


def test_same_seed_same_numbers_single_thread():
    cfg = single.SingleConfig(epochs=1, train_subset=640, threads=1, seed=5)
    a = single.run(cfg, progress=False, save=False, log=lambda *_: None)
    b = single.run(cfg, progress=False, save=False, log=lambda *_: None)
    assert a[0]["train_loss"] == b[0]["train_loss"] and a[0]["test_acc"] == b[0]["test_acc"]


def test_evaluating_a_test_subset_is_evaluating_its_first_images():
    model, test = models.build("lenet5", seed=1), datasets.load("mnist", train=False)
    for limit in (1, 499, 500, 1234):
        out = model.eval()(test.normalized[:limit])
        loss, acc = evaluate(model, test, limit=limit)
        assert loss == pytest.approx(F.cross_entropy(out, test.labels[:limit]).item(), rel=1e-5)
        assert acc == pytest.approx(100.0 * (out.argmax(1) == test.labels[:limit]).float().mean().item())
    assert evaluate(model, test, limit=10**6) == evaluate(model, test)
    cfg = single.SingleConfig(epochs=1, train_subset=320, test_subset=700, threads=1)
    row = single.run(cfg, progress=False, save=False, log=lambda *_: None)[0]
    assert row["test_acc"] * 7 == pytest.approx(round(row["test_acc"] * 7))  # correct images out of 700


def test_epoch_order_is_a_permutation_that_changes_per_epoch():
    a, b = epoch_order(1000, 0, 0), epoch_order(1000, 0, 1)
    assert sorted(a.tolist()) == list(range(1000))
    assert not (a == b).all()
    assert (epoch_order(1000, 0, 0) == a).all()


@pytest.mark.parametrize("field,value,message", [
    ("epochs", -1, "epochs must be at least 1"),
    ("batch_size", 0, "batch_size must be at least 1"),
    ("lr", 0.0, "lr must be positive"),
    ("model", "vgg", "unknown model 'vgg'"),
    ("dataset", "imagenet", "unknown dataset 'imagenet'"),
    ("test_subset", -5, "test_subset must be 0 or positive, got -5"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(LabError, match=message):
        single.SingleConfig(**{field: value})


@pytest.mark.parametrize("kind", [single.SingleConfig, DPConfig, MPConfig])
def test_every_training_kind_shares_the_fields_their_checks_and_threads_0_means_all_cores(kind):
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared <= {f.name for f in dataclasses.fields(kind)}
    assert kind(threads=0).torch_threads == (os.cpu_count() or 1) and kind(threads=3).torch_threads == 3
    for field, value, message in (("momentum", 1.0, "momentum must be in"), ("threads", -1, "threads must be 0"),
                                  ("train_subset", -2, "train_subset must be 0")):
        with pytest.raises(LabError, match=message):
            kind(**{field: value})


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-2"], "error: epochs must be at least 1, got -2."),
    (["--model", "vgg"], "error: unknown model 'vgg'; choose one of: lenet5"),
    (["--dataset", "cifar"], "error: unknown dataset 'cifar'"),
])
def test_cli_bad_input_is_one_line_without_traceback(args, message):
    proc = run_cli("run", "single", "--no-save", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_missing_data_file_is_one_line(tmp_path):
    proc = run_cli("run", "single", "--no-save", env={"LABKIT_DATA": str(tmp_path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train-images-idx3-ubyte.gz is missing" in proc.stderr


@pytest.mark.slow
def test_reference_run_reaches_98_percent(tmp_path):
    """DESIGN.md's reference: lenet5, 2 epochs, batch 32, SGD 0.01 momentum 0.9, seed 0."""
    proc = run_cli("run", "single", "--no-progress", env={"LABKIT_RESULTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "single.csv")
    assert table["epoch"].tolist() == [1, 2]
    assert table["test_acc"].iloc[-1] >= 98.0
    assert "test acc" in proc.stdout and "samples/s" in proc.stdout


def test_a_torn_last_line_loses_no_complete_row(tmp_path):
    """A process killed while appending leaves half a row: loading skips it, appending cuts it off."""
    results.append([{"run_id": "a", "acc": 1.5}, {"run_id": "b", "acc": 2.5}], "t", tmp_path)
    path = tmp_path / "t.csv"
    whole = path.read_bytes()
    results.append([{"run_id": "c", "acc": 3.5}], "t", tmp_path)
    torn = path.read_bytes()[: len(whole) + 3]            # 'c,3' of 'c,3.5\n': killed mid-write
    path.write_bytes(torn)
    assert results.load("t", tmp_path)["run_id"].tolist() == ["a", "b"]
    results.append([{"run_id": "d", "acc": 4.5}], "t", tmp_path)
    table = results.load("t", tmp_path)
    assert table["run_id"].tolist() == ["a", "b", "d"] and table["acc"].tolist() == [1.5, 2.5, 4.5]
    path.write_bytes(b"run_id,ac")                         # even the header torn: nothing recorded yet
    assert results.load("t", tmp_path).empty
    results.append([{"run_id": "e", "acc": 5.5}], "t", tmp_path)
    assert results.load("t", tmp_path)["run_id"].tolist() == ["e"]


def test_evaluations_inside_an_epoch_leave_the_training_unchanged():
    cfg = single.SingleConfig(epochs=1, train_subset=320, threads=1, seed=2)
    plain = single.run(cfg, progress=False, save=False, log=lambda *_: None)
    watched = single.run(dataclasses.replace(cfg, eval_every=3, test_subset=200), progress=False, save=False,
                         log=lambda *_: None)
    assert [r["step"] for r in watched] == [3, 6, 9, 10] and [r["end_of_epoch"] for r in watched][-2:] == [False, True]
    assert watched[-1]["train_loss"] == plain[-1]["train_loss"]   # evaluating changes nothing in training


def test_progress_in_a_log_file_is_lines_not_carriage_return_frames():
    """Output into a file or a pipe (`labkit run dp > log 2>&1`) gets whole lines, not tqdm's frames."""
    proc = run_cli("run", "dp", "--no-save", "--epochs", "1", "--train-subset", "640", "--test-subset", "200")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr + proc.stdout
    assert re.search(r"^node 0 epoch 1: 10/10 \(\d+ s\)", proc.stderr, re.M), proc.stderr
    assert "epoch 1/1  train loss" in proc.stdout
