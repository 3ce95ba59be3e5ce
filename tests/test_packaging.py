"""The wheel installs only what users import: the library ``cnn`` with its kernels inside it as
``cnn.kernels``, no top-level ``kernels`` (another distribution's name on PyPI) and no
``benchmarks`` (a tool of the checkout). Built from this checkout, installed into a fresh
environment, imported and run from outside the checkout."""
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files, so the build leaves nothing in the checkout; no
    # build isolation: the build uses this environment's setuptools (no network needed).
    source = out / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(source)], check=True, cwd=out, timeout=300)
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_the_library_and_its_kernels_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info",
                                                                          ".data"))}
    assert top == {"cnn"}
    sources = sorted(p.relative_to(REPO).as_posix()
                     for p in (REPO / "kernels").rglob("*.py"))
    assert sources and all(f"cnn/{s}" in names for s in sources)
    library = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "cnn").rglob("*.py"))
    assert all(s in names for s in library)


def test_installed_wheel_runs_a_conv_outside_the_checkout(wheel, tmp_path):
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", purelib], check=True,
                               capture_output=True, text=True).stdout.strip())
    # torch, triton and numpy come from this environment's site-packages, added as a plain path
    # entry: its .pth files (among them the editable install of this checkout) are not read.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                    "--quiet", "--target", str(site), str(wheel)], check=True, timeout=300)
    probe = textwrap.dedent("""
        import importlib.util, pathlib, torch
        import cnn
        assert pathlib.Path(cnn.__file__).parent == pathlib.Path(%r) / "cnn", cnn.__file__
        assert importlib.util.find_spec("kernels") is None
        assert importlib.util.find_spec("benchmarks") is None
        x, w, b = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(4)
        y = cnn.functional.conv2d(x, w, b, padding=1)
        torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, b, padding=1),
                                   rtol=1e-4, atol=1e-5)
        print("ok", cnn.kernels.__file__)
    """ % str(site))
    run = subprocess.run([str(env / "bin" / "python"), "-c", probe], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "1",
                              "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok " + str(site / "cnn" / "kernels")), run.stdout
