"""MNIST and Fashion-MNIST from the standard idx files, verified, held in memory as tensors.

Loading the whole set once and slicing it with index tensors is what makes every training
loop in the lab fast: no per-sample Dataset, no PIL, no collation.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LabError
from ..paths import data_root
from .catalog import CHECKSUMS, CLASSES, FASHION_DEBIAN_DIR, RESTORE_HINT, STATS  # noqa: F401 - re-exported

DATA_ROOT = data_root()

@dataclass(frozen=True)
class ImageDataset:
    """A whole split in memory: uint8 images (N, 28, 28) and int64 labels (N)."""

    name: str
    train: bool
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        return CLASSES[self.name]

    @functools.cached_property
    def normalized(self) -> torch.Tensor:
        """All images as normalised float32 (N, 1, 28, 28), computed once."""
        mean, std = STATS[self.name]
        return ((self.images.float() / 255.0 - mean) / std).unsqueeze(1)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels for an index tensor: one gather, no per-sample work."""
        index = torch.as_tensor(index, dtype=torch.long)
        return self.normalized.index_select(0, index), self.labels.index_select(0, index)


def _candidate_dirs(name: str) -> list[Path]:
    if name == "mnist":
        return [DATA_ROOT / "MNIST" / "raw"]
    return [DATA_ROOT / "FashionMNIST" / "raw", FASHION_DEBIAN_DIR]


def _find_dir(name: str) -> Path:
    dirs = _candidate_dirs(name)
    for d in dirs:
        if all((d / f"{stem}.gz").exists() or (d / stem).exists() for stem in CHECKSUMS[name]):
            return d
    if name == "mnist":
        missing = [f"{stem}.gz" for stem in CHECKSUMS[name] if not (dirs[0] / f"{stem}.gz").exists()]
        raise LabError(f"MNIST file {dirs[0] / missing[0]} is missing; {RESTORE_HINT[name]}.")
    raise LabError(f"Fashion-MNIST was not found in {' or '.join(map(str, dirs))}; {RESTORE_HINT[name]}.")


def read_idx(path: Path, expected_md5: str | None = None) -> np.ndarray:
    """Read one idx file (optionally .gz), check its MD5, and return it as a numpy array."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise LabError(f"data file {path} cannot be read ({exc}); it is corrupt.") from None
    if expected_md5 and hashlib.md5(raw).hexdigest() != expected_md5:
        raise LabError(f"data file {path} is corrupt (MD5 mismatch).")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LabError(f"data file {path} is not an idx file of unsigned bytes.")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise LabError(f"data file {path} is truncated: expected {int(np.prod(dims))} values, got {data.size}.")
    return data.reshape(dims)


@functools.lru_cache(maxsize=8)
def load(name: str = "mnist", train: bool = True) -> ImageDataset:
    """Load a split once per process, verifying every file's checksum."""
    key = name.lower().replace("_", "-")
    if key not in CHECKSUMS:
        raise LabError(f"unknown dataset {name!r}; choose one of: {', '.join(CHECKSUMS)}.")
    folder = _find_dir(key)
    prefix = "train" if train else "t10k"
    arrays = {}
    for kind in ("images", "labels"):
        stem = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        path = folder / f"{stem}.gz" if (folder / f"{stem}.gz").exists() else folder / stem
        try:
            arrays[kind] = read_idx(path, CHECKSUMS[key][stem])
        except LabError as exc:
            raise LabError(f"{exc} {RESTORE_HINT[key][0].upper()}{RESTORE_HINT[key][1:]}.") from None
    images = torch.from_numpy(arrays["images"].copy())
    labels = torch.from_numpy(arrays["labels"].astype(np.int64))
    return ImageDataset(key, train, images, labels)
