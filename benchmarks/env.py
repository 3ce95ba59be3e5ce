"""Who measured: GPU name, torch and Triton versions, date, git commit (stamped on every row)."""
import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The checkout's commit (+'-dirty' with local changes); read from .git when git is absent;
    'unknown' for a copy of the tree without .git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO,
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    head = REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "unknown"


def environment() -> dict:
    """The columns every CSV row and JSON file carries."""
    import triton
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU interpreter)"
    return {"gpu": gpu, "torch_version": torch.__version__,
            "triton_version": triton.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit()}
