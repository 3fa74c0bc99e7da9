import gzip
import shutil

import pytest
import torch

from labkit import paths
from labkit.data import datasets
from labkit.errors import LabError


def test_mnist_train_has_known_statistics():
    ds = datasets.load("mnist", train=True)
    assert ds.images.shape == (60000, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (60000,) and ds.labels.dtype == torch.int64
    pixels = ds.images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-5)
    counts = torch.bincount(ds.labels).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_test_split():
    ds = datasets.load("mnist", train=False)
    assert len(ds) == 10000
    pixels = ds.images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1325, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3105, abs=5e-5)


def test_batch_is_normalised_gather():
    ds = datasets.load("mnist")
    idx = torch.tensor([5, 0, 59999, 5])
    x, y = ds.batch(idx)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, ds.labels[idx])
    expected = (ds.images[idx].float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[:, 0], expected)
    assert torch.equal(x[0], x[3])
    # the whole normalised training set has mean ~0 and std ~1
    assert abs(ds.normalized.mean().item()) < 1e-3 and abs(ds.normalized.std().item() - 1) < 1e-3


def _copy_mnist(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(paths.REPO_ROOT / "data" / "MNIST" / "raw", raw)
    return raw


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DATA_ROOT", tmp_path)
    datasets.load.cache_clear()
    yield tmp_path
    datasets.load.cache_clear()


def test_missing_file_names_it_and_how_to_restore(data_root):
    raw = _copy_mnist(data_root)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LabError, match=r"t10k-labels-idx1-ubyte\.gz.*missing.*git checkout"):
        datasets.load("mnist", train=False)


def test_corrupt_file_is_detected_by_checksum(data_root):
    raw = _copy_mnist(data_root)
    path = raw / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] ^= 0xFF  # flip one label byte: still a valid idx file, wrong checksum
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(LabError, match=r"train-labels-idx1-ubyte\.gz is corrupt \(MD5"):
        datasets.load("mnist", train=True)


def test_truncated_gzip_is_reported(data_root):
    raw = _copy_mnist(data_root)
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(LabError, match=r"t10k-images-idx3-ubyte\.gz.*corrupt"):
        datasets.load("mnist", train=False)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(LabError, match=r"unknown dataset 'cifar10'.*mnist, fashion-mnist"):
        datasets.load("cifar10")


def test_fashion_mnist_absent_says_how_to_get_it(data_root, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_DEBIAN_DIR", data_root / "nowhere")
    with pytest.raises(LabError, match=r"Fashion-MNIST was not found.*apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist")


@pytest.mark.skipif(not datasets.FASHION_DEBIAN_DIR.exists(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_loads_from_debian_package():
    ds = datasets.load("fashion-mnist")
    assert ds.images.shape == (60000, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [6000] * 10
