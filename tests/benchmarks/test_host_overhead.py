"""CPU smoke of ``python -m benchmarks.host_overhead``: ours against torch's own op, one table
row per op, the same rows as JSON, and Triton's launches restored afterwards. No timing
assertions: timings are not tests."""
import json

import pytest
import torch

from benchmarks import host_overhead

FIELDS = ("ours_fwd_us", "torch_fwd_us", "fwd_ratio", "ours_fwd_bwd_us", "torch_fwd_bwd_us",
          "fwd_bwd_ratio")


def launch_methods():
    from triton.runtime import autotuner, interpreter, jit
    return (jit.JITFunction.run, autotuner.Autotuner.run, autotuner.Heuristics.run,
            interpreter.InterpretedFunction.run)


def test_table_and_json_rows_for_ours_against_torch(tmp_path, capsys):
    out = tmp_path / "rows.json"
    before, threads = launch_methods(), torch.get_num_threads()
    assert host_overhead.main(["--calls", "3", "--ops", "relu,conv2d", "--json", str(out)]) == 0
    assert launch_methods() == before  # the no-op patch is undone
    assert torch.get_num_threads() == threads

    lines = capsys.readouterr().out.splitlines()
    assert any("INCLUDING its CPU compute" in line for line in lines)  # the header says so
    head = next(i for i, line in enumerate(lines) if line.startswith("op "))
    for column in ("ours fwd us", "torch fwd us", "ratio", "ours fwd+bwd us",
                   "torch fwd+bwd us", "target"):
        assert column in lines[head]
    rows = [line.split() for line in lines[head + 1:]]
    assert [r[0] for r in rows] == ["relu", "conv2d"]
    for r in rows:
        assert all(float(cell.rstrip("x")) > 0 for cell in r[1:7])
        assert r[7] in ("met", "MISSED:")

    data = json.loads(out.read_text())
    assert data["meta"]["calls"] == 3
    assert [r["op"] for r in data["rows"]] == ["relu", "conv2d"]
    for r in data["rows"]:
        assert all(isinstance(r[f], float) and r[f] > 0 for f in FIELDS)
        assert r["target_met"] == (not r["misses"])


def test_cold_calls_empty_our_caches_before_each_call(tmp_path, capsys):
    from cnn.kernels import host_cache
    out = tmp_path / "rows.json"
    assert host_overhead.main(["--calls", "2", "--ops", "max_pool2d", "--cold",
                               "--json", str(out)]) == 0
    assert "COLD" in capsys.readouterr().out
    assert json.loads(out.read_text())["meta"]["cold"] is True
    # the last reset emptied them: no entry left behind
    assert all(s["size"] == 0 for s in host_cache.cache_stats().values())


def test_every_public_op_has_a_row():
    import cnn
    assert set(host_overhead.op_cases()) == set(cnn.functional.__all__)


def test_kernels_as_no_ops_restores_launches_after_an_error():
    before = launch_methods()
    with pytest.raises(RuntimeError):
        with host_overhead.kernels_as_no_ops():
            assert launch_methods() != before
            raise RuntimeError("boom")
    assert launch_methods() == before


def test_unknown_op_is_refused():
    with pytest.raises(SystemExit):
        host_overhead.main(["--ops", "nope"])
