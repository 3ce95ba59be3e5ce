"""The static tools compile for the GPU: their cases are built in a subprocess with
TRITON_INTERPRET=0 (this test process runs the kernels through the interpreter)."""
import json
import subprocess
import sys

import pytest
from support import REPO
from support import compiled_env as _compiled_env


@pytest.fixture
def compiled_env() -> dict:
    """The environment of a compiled-mode subprocess at the repo root."""
    return _compiled_env()


@pytest.fixture
def probe():
    """probe(code): the JSON a Python snippet prints, run in a compiled-mode subprocess."""
    def run(code: str, timeout: int = 300):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_compiled_env(),
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout)
    return run
