"""What the lab knows about its datasets without loading them: the idx files' checksums, the pixel
statistics, the class names and where to get a missing file (light: the command line validates with it)."""
from __future__ import annotations

from pathlib import Path

# MD5 of the *decompressed* idx files. MNIST: the published originals (shared/data/README.md).
# Fashion-MNIST: the files of Debian's dataset-fashion-mnist (upstream git 55506a9).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
# Mean and std of the training pixels scaled to [0, 1]; used to normalise every split.
STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
}
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
RESTORE_HINT = {
    "mnist": "restore it with `git checkout -- data/MNIST/raw` (the files are committed)",
    "fashion-mnist": "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) "
                     "or copy the four *.gz files from the Fashion-MNIST release into data/FashionMNIST/raw/",
}
