"""Image data sets larger than memory: ``imagefolder`` (``<root>/train/<class>/*``, ``<root>/val/<class>/*``)
and ``tiny_imagenet`` (the cs231n archive, downloaded into the data cache like CIFAR).

The images stay on disk. :class:`ImageFiles` stands in for the uint8 image tensor (N, 3, S, S) of the
in-memory data sets: indexing it with a 1-D index tensor or a slice decodes just those images, so
``BatchStream`` and ``iterate_batches`` work unchanged and the whole set is never one tensor; a batch stays a
pure function of its indices (and so of ``(data_seed, step)``). Every image is decoded the same way, resize of
the shorter side to ``resize`` and a center crop of ``image_size``; training batches then get ``rrc_flip``
(random-resized crop + flip on the decoded batch, seeded by the step, see ``augment.py``).

Decoding runs in a persistent thread pool (PIL releases the GIL while decoding and resizing), and
``BatchStream`` announces the next steps' index lists (:meth:`ImageFiles.prefetch`), which are decoded ahead;
a request that does not match what was prefetched (a jump or a rewind) drops that and decodes the requested
indices. A thread pool rather than DataLoader worker processes: a DataLoader's sampler cannot be re-targeted
at an arbitrary step without rebuilding its workers, and worker processes would have to re-open the file
list; threads share it and a result depends only on the indices, which keeps rewinds exact.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.data.download import Archive, data_home, fetch, source_override
from pruning_bench.errors import BenchError

EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTIONS: dict[str, Any] = {"image_size": 224, "resize": None, "workers": None}
TINY_OPTIONS: dict[str, Any] = {"image_size": 64, "resize": None, "workers": None}
LAYOUT = "<root>/train/<class>/*.jpg|jpeg|png and <root>/val/<class>/*"

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One persistent decoding pool per worker count, shared by every ImageFiles of this process."""
    with _POOL_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="pruning-bench-decode")
        return _POOLS[workers]


def decode_image(path: str, image_size: int, resize: int) -> np.ndarray:
    """One image as uint8 (3, image_size, image_size): RGB, shorter side resized to ``resize``, center crop."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resize / min(w, h)
            nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            return np.array(img, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy
    except OSError as exc:
        raise BenchError(f"cannot read image {path}: {' '.join(str(exc).split())}") from None


class ImageFiles:
    """A lazy uint8 image "tensor" (N, 3, S, S) over image files: ``x[idx]`` / ``x[a:b]`` decodes those
    images only (in parallel); ``subset(idx)`` is another lazy view (for the validation split)."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str], *, image_size: int, resize: int, workers: int) -> None:
        self.paths = list(paths)
        self.image_size, self.resize, self.workers = image_size, resize, max(1, workers)
        # per stream (a BatchStream's token; None for plain indexing): index lists being decoded ahead
        self._ahead: dict[Hashable, list[tuple[tuple[int, ...], list[Future[np.ndarray]]]]] = {}

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.image_size, self.image_size))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images, {self.image_size}x{self.image_size}, resize {self.resize})"

    def to(self, *args: Any, **kwargs: Any) -> ImageFiles:
        """Stays on the host: decoded batches are moved by their consumer."""
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ahead": {}}  # pending decodes stay in this process

    def clone(self) -> ImageFiles:
        return self  # immutable

    def subset(self, idx: torch.Tensor | Sequence[int]) -> ImageFiles:
        """The images at ``idx``, lazily (nothing is decoded)."""
        picks = torch.as_tensor(idx).tolist()
        return ImageFiles([self.paths[i] for i in picks], image_size=self.image_size, resize=self.resize,
                          workers=self.workers)

    def _submit(self, indices: Sequence[int]) -> list[Future[np.ndarray]]:
        pool = _pool(self.workers)
        return [pool.submit(decode_image, self.paths[i], self.image_size, self.resize) for i in indices]

    def prefetch(self, batches: Sequence[torch.Tensor], stream: Hashable = None) -> None:
        """Start decoding the index lists of ``stream``'s next batches (in the order it will ask for them).
        Each stream has its own queue, so two streams over one set (SWAMP's particles, a calibration
        stream) never drop each other's prefetches."""
        queue = self._ahead.setdefault(stream, [])
        queued = {key for key, _ in queue}
        for idx in batches:
            key = tuple(torch.as_tensor(idx).tolist())
            if key not in queued:
                queue.append((key, self._submit(key)))
                queued.add(key)

    def decode(self, indices: Sequence[int], stream: Hashable = None) -> torch.Tensor:
        """Images ``indices`` as one uint8 tensor (len(indices), 3, S, S), using ``stream``'s matching
        prefetch."""
        key = tuple(indices)
        futures = None
        queue = self._ahead.get(stream, [])
        while queue:  # a stream asks for its batches in order: drop its prefetches that were skipped
            ahead_key, ahead = queue.pop(0)
            if ahead_key == key:
                futures = ahead
                break
            for f in ahead:
                f.cancel()
        if futures is None:
            for _, ahead in queue:
                for f in ahead:
                    f.cancel()
            queue.clear()
            futures = self._submit(key)
        out = torch.empty((len(key), 3, self.image_size, self.image_size), dtype=torch.uint8)
        for i, f in enumerate(futures):
            out[i] = torch.from_numpy(f.result())
        return out

    def __getitem__(self, item: torch.Tensor | slice | Sequence[int]) -> torch.Tensor:
        if isinstance(item, slice):
            indices: list[int] = list(range(len(self)))[item]
        else:
            t = torch.as_tensor(item)
            if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"ImageFiles takes a 1-D integer index tensor or a slice, got {item!r:.80}")
            indices = t.cpu().tolist()
        return self.decode(indices)


def _workers(options: dict[str, Any]) -> int:
    return int(options.get("workers") or min(8, os.cpu_count() or 1))


def _sizes(options: dict[str, Any], ratio: float) -> tuple[int, int]:
    size = int(options["image_size"])
    resize = int(options["resize"] or round(size * ratio))
    if size < 1 or resize < size:
        raise BenchError(f"image_size must be >= 1 and resize >= image_size, got {size} and {resize}")
    return size, resize


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    """(classes, paths, labels) of ``folder/<class>/*``; classes sorted by folder name (or as given)."""
    if not folder.is_dir():
        raise BenchError(f"imagefolder: {folder} is not a folder; expected the layout {LAYOUT}")
    if classes is None:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        sub = folder / name
        found = _images(sub) if sub.is_dir() else []
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    if not classes or not paths:
        raise BenchError(f"imagefolder: no images in {folder}; expected the layout {LAYOUT}")
    return classes, paths, labels


def _raw(train: tuple[list[str], list[int]], test: tuple[list[str], list[int]], num_classes: int,
         options: dict[str, Any], resize_ratio: float = 256 / 224) -> RawDataset:
    size, resize = _sizes(options, resize_ratio)
    workers = _workers(options)
    return RawDataset(
        train_x=ImageFiles(train[0], image_size=size, resize=resize, workers=workers),  # type: ignore[arg-type]
        train_y=torch.tensor(train[1], dtype=torch.int64),
        test_x=ImageFiles(test[0], image_size=size, resize=resize, workers=workers),  # type: ignore[arg-type]
        test_y=torch.tensor(test[1], dtype=torch.int64),
        num_classes=num_classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, augmentation="rrc_flip")


def load_imagefolder(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """``<data_dir>/train`` (training set, a validation part held out) and ``<data_dir>/val`` (test set)."""
    if not data_dir:
        raise BenchError(f"dataset 'imagefolder' needs data_dir (--data-dir DIR or data_dir under [dataset]): "
                         f"a folder laid out as {LAYOUT}; nothing is downloaded")
    root = Path(data_dir).expanduser()
    classes, train_paths, train_labels = _scan(root / "train", None)
    _, test_paths, test_labels = _scan(root / "val", classes)
    return _raw((train_paths, train_labels), (test_paths, test_labels), len(classes), options)


# ---- Tiny ImageNet ---------------------------------------------------------------------------------
TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # as published by torchvision-style loaders of this archive
TINY_FILES = ("wnids.txt", "val/val_annotations.txt")


def tiny_archive() -> Archive:
    return Archive(title="Tiny ImageNet", url=source_override("tiny_imagenet", "url", TINY_URL),
                   md5=source_override("tiny_imagenet", "md5", TINY_MD5), folder=TINY_FOLDER,
                   files=TINY_FILES, expected="wnids.txt, train/<wnid>/images/, val/val_annotations.txt")


def _tiny_dir(root: Path, download: bool) -> Path:
    for candidate in (root / TINY_FOLDER, root):
        if all((candidate / f).is_file() for f in TINY_FILES):
            return candidate
    archive = tiny_archive()
    folder = root if root.name == TINY_FOLDER else root / TINY_FOLDER
    if folder.is_dir() and any(folder.iterdir()):
        raise BenchError(f"Tiny ImageNet in {folder}/ is incomplete (needs {', '.join(TINY_FILES)}): delete that "
                         f"directory to download it again, or unzip {archive.url} there")
    if not download:
        raise BenchError(f"Tiny ImageNet not found in {folder}/ and downloading is off: fetch {archive.url} by "
                         f"hand (md5 {archive.md5}) and unzip it into {folder.parent}, or pass --data-dir DIR")
    return fetch(archive, folder.parent)


def load_tiny_imagenet(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """Tiny ImageNet-200: train/<wnid>/images/*.JPEG (100,000) and val/ (10,000, labels from
    val/val_annotations.txt) as the test set; 64x64, 200 classes sorted by wnid."""
    folder = _tiny_dir(data_home(data_dir), download)
    classes = sorted((folder / "wnids.txt").read_text().split())
    index = {wnid: i for i, wnid in enumerate(classes)}
    train_paths: list[str] = []
    train_labels: list[int] = []
    for wnid in classes:
        found = _images(folder / "train" / wnid / "images") if (folder / "train" / wnid / "images").is_dir() else []
        train_paths += [str(p) for p in found]
        train_labels += [index[wnid]] * len(found)
    test_paths: list[str] = []
    test_labels: list[int] = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise BenchError(f"Tiny ImageNet: {folder}/val/val_annotations.txt names '{parts[1]}', not in wnids.txt")
        test_paths.append(str(folder / "val" / "images" / parts[0]))
        test_labels.append(index[parts[1]])
    if not train_paths or not test_paths:
        raise BenchError(f"Tiny ImageNet in {folder}/ has no training or validation images: expected "
                         "train/<wnid>/images/*.JPEG and val/images/*.JPEG with val/val_annotations.txt")
    return _raw((train_paths, train_labels), (sorted(test_paths), _sorted_labels(test_paths, test_labels)),
                len(classes), options, resize_ratio=1.0)  # 64x64 images: no eval resize by default


def _sorted_labels(paths: list[str], labels: list[int]) -> list[int]:
    return [label for _, label in sorted(zip(paths, labels, strict=True))]
