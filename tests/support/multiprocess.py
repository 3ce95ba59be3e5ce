"""Launching the multi-process tests: ranks as subprocesses (or under torchrun) on 127.0.0.1,
free ports, a hard timeout, and no process left behind, also when a test fails."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
ROOT = TESTS_DIR.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra) -> dict:
    """The environment of a rank: loopback only, the parent's interpreter choice, the
    worktree's packages first."""
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS_DIR),
                                           env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::RuntimeWarning")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _descendants(pid: int) -> list:
    """Process ids below pid (torchrun starts its workers in sessions of their own)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(procs) -> None:
    """SIGKILL every process still running and everything it started, then reap them."""
    for p in procs:
        if p.poll() is None:
            for pid in [*_descendants(p.pid), p.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for p in procs:
        p.wait()


def wait_all(procs, timeout_s: float, logs):
    """Wait for every process; past timeout_s kill them all and fail the test. Returns the
    exit codes. ``logs``: (stdout, stderr) file paths per process, quoted on failure."""
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        _stop(procs)
        pytest.fail(f"processes still running after {timeout_s:.0f} s:\n" + read_logs(logs))
    finally:
        _stop(procs)
    return [p.returncode for p in procs]


def read_logs(logs) -> str:
    return "\n".join(f"--- {Path(path).name}\n{Path(path).read_text()[-3000:]}"
                     for pair in logs for path in pair if Path(path).exists())


def start(cmd, env, log_dir: Path, name: str):
    """Start cmd in its own process group (so it and its children can be killed together),
    output to log_dir/name.{out,err}."""
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, cwd=ROOT,
                             start_new_session=True)
    return p, (out, err)


def run_ranks(test_file: str, function: str, world_size: int, tmp_path: Path, timeout_s: float,
              *args, check: bool = True, **env):
    """Run ``function(rank, world_size, tmp_path, *args)`` of the test module at test_file
    (pass ``__file__``) in world_size processes that
    form a process group (env://, a free port). Returns (exit codes, logs); with check, fails
    the test unless every rank exits 0."""
    port = free_port()
    call = (f"import runpy; m = runpy.run_path({str(test_file)!r}); "
            f"m[{function!r}]({{rank}}, {world_size}, {str(tmp_path)!r}, *{args!r})")
    procs, logs = [], []
    try:
        for rank in range(world_size):
            p, log = start([sys.executable, "-c", call.format(rank=rank)],
                           base_env(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world_size,
                                    MASTER_PORT=port, **env), tmp_path, f"rank{rank}")
            procs.append(p)
            logs.append(log)
        codes = wait_all(procs, timeout_s, logs)
    finally:
        _stop(procs)
    if check and any(codes):
        pytest.fail(f"exit codes {codes}:\n" + read_logs(logs))
    return codes, logs


def torchrun(nproc: int, args, tmp_path: Path, timeout_s: float, name: str = "torchrun",
             check: bool = True, **env):
    """``torchrun --nproc_per_node=nproc -m cnn.train *args`` on 127.0.0.1 (a free port).
    Returns (exit code, logs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "cnn.train", *map(str, args)]
    p, log = start(cmd, base_env(**env), tmp_path, name)
    code = wait_all([p], timeout_s, [log])[0]
    if check and code:
        pytest.fail(f"torchrun exit code {code}:\n" + read_logs([log]))
    return code, log
