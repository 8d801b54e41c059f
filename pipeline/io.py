"""Files the stages write and read: every write atomic, every read safe.

A stage killed mid-write leaves at most a `.tmp-*` file, never a truncated output that DVC
would hash and cache as if it were complete; arrays are never unpickled.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; outputs on a shared server should honour the umask instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir() and not tmp_path.is_symlink():
            shutil.rmtree(tmp_path)
        elif tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `path`; it replaces `path` only if the block succeeds,
    so a failed stage leaves its previous output folder whole (or none), never a mix."""
    path = Path(path)
    with atomic_path(path) as staging:
        staging.unlink()
        staging.mkdir()
        yield staging
        if path.exists():
            shutil.rmtree(path)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete `.tmp-*` files a killed process left behind (its rename never happened)."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(".tmp-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """`obj` as JSON; a NaN or infinite float becomes null (JSON has no NaN: a strict parser,
    or another language's, would reject the file)."""
    text = json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False)
    write_text_atomic(path, text + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path, required: bool = False) -> dict:
    """A JSON file the stages wrote; {} when it is not there (a stage that did not run), or
    with `required` an error that names it."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    if required:
        from pipeline.cli import PipelineError

        raise PipelineError(f"{path}: missing; run the stage that writes it")
    return {}


def write_csv_atomic(path: str | Path, frame) -> None:
    write_text_atomic(path, frame.to_csv(index=False))


def save_array_atomic(path: str | Path, array: np.ndarray) -> None:
    array = np.asarray(array)
    write_rows_atomic(path, array.shape, array.dtype, [array])


def byte_view(array: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat uint8 view, no copy when it is contiguous: what hashlib
    and a file take in place, where .tobytes() would copy a whole split."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def write_rows_atomic(path: str | Path, shape: tuple[int, ...], dtype,
                      chunks: Iterable[np.ndarray]) -> None:
    """An .npy file of `shape` written from `chunks` of rows (first axis) in order, so the
    array is never whole in memory, nor its bytes (np.save into a buffer held the array's
    bytes twice more). The file is the one np.save writes; atomic and fsynced."""
    dtype, shape = np.dtype(dtype), tuple(shape)
    if dtype.hasobject:
        raise ValueError(f"{path}: arrays of Python objects are never written")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:  # np.save's own choice: version 1.0 unless the header outgrows it
            np.lib.format.write_array_header_1_0(fh, header)
        except ValueError:  # raised before anything is written
            np.lib.format.write_array_header_2_0(fh, header)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if chunk.shape[1:] != shape[1:]:
                raise ValueError(f"{path}: a chunk of rows {chunk.shape} in an array {shape}")
            fh.write(byte_view(chunk))
            written += len(chunk) if chunk.ndim else 1
        if written != (shape[0] if shape else 1):
            raise ValueError(f"{path}: {written} rows written, the header says {shape}")
        fh.flush()
        os.fsync(fh.fileno())


def load_array(path: str | Path) -> np.ndarray:
    # Never unpickle: these files come from our own stages, but a data folder is untrusted.
    return np.load(path, allow_pickle=False)


class NpyRows:
    """The rows of an (N, ...) array in an .npy file, read from disk a few at a time.

    Neither np.load (the whole array in memory) nor a memory map (every page it touches
    stays in the process's resident memory until it is unmapped, so after one epoch the
    whole file is counted): each read is a pread of the rows asked for, into a fresh array,
    and the file's pages stay in the kernel's cache, not in this process. Only plain
    dtypes are accepted; nothing is unpickled.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as file:
            try:
                version = np.lib.format.read_magic(file)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, fortran_order, self.dtype = read_header(file)
            except ValueError as exc:
                raise ValueError(f"{self.path} is not an array file this pipeline wrote: "
                                 f"{exc}") from None
            self.offset = file.tell()
        if self.dtype.hasobject or fortran_order or not shape:
            raise ValueError(f"{self.path}: expected a C-ordered array of plain numbers "
                             f"with a first axis, found {self.dtype} {shape}")
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.row_bytes * self.shape[0]
        if (size := self.path.stat().st_size) != expected:
            raise ValueError(f"{self.path} holds {size} bytes, its header says {expected}: "
                             "a truncated or altered file; rerun the stage that wrote it")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def read(self, indices) -> np.ndarray:
        """Rows `indices` (any order, repeats allowed) as an array, in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"rows {indices.min()}..{indices.max()} of {len(self)}")
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        flat = byte_view(out).reshape(len(indices), self.row_bytes)
        with open(self.path, "rb", buffering=0) as file:
            for row, index in zip(flat, indices.tolist(), strict=True):
                self._read_into(file, row, self.offset + index * self.row_bytes)
        return out

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """The array in order, `rows` rows at a time (hashing, a copy to a device)."""
        with open(self.path, "rb", buffering=0) as file:
            for first in range(0, len(self), rows):
                chunk = np.empty((min(rows, len(self) - first), *self.shape[1:]), self.dtype)
                self._read_into(file, byte_view(chunk),
                                self.offset + first * self.row_bytes)
                yield chunk

    def _read_into(self, file, buffer: np.ndarray, position: int) -> None:
        done = 0
        while done < len(buffer):  # a pread may return fewer bytes than asked for
            got = os.preadv(file.fileno(), [buffer[done:]], position + done)
            if got == 0:
                raise ValueError(f"{self.path} ended early: a truncated file")
            done += got


def _interned(obj: Any) -> Any:
    if isinstance(obj, str):
        return sys.intern(obj)
    if type(obj) in (dict, OrderedDict):
        copy = type(obj)((_interned(key), _interned(value)) for key, value in obj.items())
        if isinstance(obj, OrderedDict):
            copy.__dict__.update(obj.__dict__)  # a state_dict's _metadata
        return copy
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_interned(item) for item in obj)
    return obj


def torch_bytes(obj: dict) -> bytes:
    """torch.save's bytes, the same for equal objects: pickle writes a string it has seen
    as a back-reference only if it is the same object, so two equal checkpoints (one with
    a key read back from disk) differed in bytes and in DVC's hash. Interned, equal
    strings are one object."""
    import torch

    buffer = io.BytesIO()
    torch.save(_interned(obj), buffer)
    return buffer.getvalue()


def save_torch_atomic(path: str | Path, obj: dict) -> None:
    write_bytes_atomic(path, torch_bytes(obj))


# Columns that name crops, samples and classes are text whatever they look like: read with
# pandas' defaults, a sample folder "NA_crops_r" became NaN (its crops silently left out
# of every split) and samples "12.1" and "12.10" both the number 12.1 (two patients
# merged into one).
NAME_COLUMNS = ("crop_id", "group", "sample", "class_name", "path")


def read_crop_table(path, **read_csv_options):
    """A CSV of crops (manifest, split, folds, predictions) as written by the stages."""
    import pandas as pd

    return pd.read_csv(path, dtype=dict.fromkeys(NAME_COLUMNS, str), keep_default_na=False,
                       na_values=[""], **read_csv_options)


def bytes_under(path: str | Path) -> int:
    """Bytes of the files under `path` (or of `path` itself): a stage's `bytes_written`."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
