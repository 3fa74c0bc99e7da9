"""Textbook implementations that the benchmarks compare labkit against.

``TutorialMNIST`` reproduces what ``torchvision.datasets.MNIST`` with
``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`` does per sample (torchvision
itself cannot be installed here): a PIL image per sample, converted, permuted and
normalised one at a time, then stacked by the DataLoader's default collation.
"""
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for a mode-L PIL image."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], 1)
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision.transforms.functional.normalize (not in place)."""
    tensor = tensor.clone()
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if (std == 0).any():
        raise ValueError("std evaluated to zero")
    return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


class TutorialMNIST(Dataset):
    """A per-sample MNIST Dataset as the PyTorch tutorials build it."""

    def __init__(self, dataset):
        self.data, self.targets = dataset.images, dataset.labels

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        return normalize(to_tensor(img), (0.1307,), (0.3081,)), target
