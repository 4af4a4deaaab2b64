"""Fashion-MNIST through a real tfds pipeline, from Debian's offline files.

tfds' own `fashion_mnist` builder finds Debian's files through
`DownloadConfig(manual_dir=...)` but rejects them on checksum: Debian
recompressed the `.gz` files, so their bytes differ although the images are
the same. This builder checks what matters instead, the decompressed IDX
content (headers, sizes and sha256), then prepares the standard tfds dataset
(same name, version and features as `tfds.builder("fashion_mnist")`) without
any network access.
"""

import gzip
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from keras_cra.errors import UserError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
APT_PACKAGE = "dataset-fashion-mnist"

# sha256 of the decompressed IDX files, measured on the files of Debian's
# dataset-fashion-mnist 0.0~git20200523 (the Zalando release, recompressed).
FILES = {
    "train_data": ("train-images-idx3-ubyte.gz", 2051, 60000,
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte.gz", 2049, 60000,
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_data": ("t10k-images-idx3-ubyte.gz", 2051, 10000,
                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 2049, 10000,
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


class FashionMnistFilesError(UserError, FileNotFoundError):
    """The offline Fashion-MNIST files are missing or not the expected data."""


def read_idx(path, magic, count):
    """Decompresses and checks one IDX file; returns its bytes."""
    if not os.path.exists(path):
        raise FashionMnistFilesError(
            f"Fashion-MNIST file {path} is missing. Install Debian's package: "
            f"apt-get install {APT_PACKAGE}"
        )
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data[:8], ">i4")
    if header[0] != magic or header[1] != count:
        raise FashionMnistFilesError(
            f"{path} is not the expected IDX file: header (magic, count) = "
            f"({header[0]}, {header[1]}), expected ({magic}, {count})."
        )
    return data


def verify_files(manual_dir=DEBIAN_DIR, check_sha256=True):
    """Reads and checks all four files; returns `{key: decompressed bytes}`."""
    out = {}
    for key, (name, magic, count, sha256) in FILES.items():
        data = read_idx(os.path.join(manual_dir, name), magic, count)
        if check_sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise FashionMnistFilesError(
                f"{os.path.join(manual_dir, name)} decompresses to other content "
                f"than the Fashion-MNIST release (sha256 {sha256})."
            )
        out[key] = data
    return out


class OfflineFashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
    """tfds' `fashion_mnist`, prepared from local IDX files."""

    name = "fashion_mnist"

    def __init__(self, *, manual_dir=DEBIAN_DIR, check_sha256=True, **kwargs):
        self._local_dir = manual_dir
        self._check_sha256 = check_sha256
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        files = verify_files(self._local_dir, self._check_sha256)
        return [
            tfds.core.SplitGenerator(
                name=split,
                gen_kwargs=dict(
                    images=np.frombuffer(files[f"{prefix}_data"], np.uint8, offset=16)
                    .reshape(-1, 28, 28, 1),
                    labels=np.frombuffer(files[f"{prefix}_labels"], np.uint8, offset=8)
                    .astype(np.int64),
                ),
            )
            for split, prefix in ((tfds.Split.TRAIN, "train"), (tfds.Split.TEST, "test"))
        ]

    def _generate_examples(self, images, labels):
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image, "label": label}


def builder(data_dir=None, manual_dir=DEBIAN_DIR):
    """A prepared tfds builder for Fashion-MNIST (prepares it once, offline)."""
    b = OfflineFashionMNIST(data_dir=data_dir, manual_dir=manual_dir)
    if not b.is_prepared():
        verify_files(manual_dir, check_sha256=False)  # fail fast with the apt hint
        b.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir, try_download_gcs=False
            )
        )
    return b
