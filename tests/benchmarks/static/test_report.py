"""benchmarks.static.report: the saved report read back (which kernel modules changed since it
was made) and the format it is saved in."""
import json

from support import REPO  # noqa: E402


def test_static_report_names_only_the_modules_that_changed():
    from benchmarks.static import report as static_report
    from benchmarks.static.cases import KERNEL_MODULES, REFERENCE_MODULE
    from benchmarks.static.compile import module_hash

    hashes = {m: module_hash(m) for m in KERNEL_MODULES + [REFERENCE_MODULE]}
    assert static_report.stale_modules({"meta": {"module_hashes": hashes}}) == []
    hashes["cnn.kernels.relu"] = "0" * 16
    assert static_report.stale_modules({"meta": {"module_hashes": hashes}}) == ["cnn.kernels.relu"]
    assert static_report.stale_modules({"meta": {}}) == KERNEL_MODULES + [REFERENCE_MODULE]


def test_the_saved_report_has_the_fields_a_run_writes():
    """benchmarks/results/compile_check.json holds every field ``record`` writes for a result,
    the meta a run stamps, and one compile of every registered kernel for each target."""
    from benchmarks.static.compile import Job, Result
    from benchmarks.static.report import SAVED, record

    saved = json.loads(SAVED.read_text())
    assert SAVED == REPO / "benchmarks" / "results" / "compile_check.json"
    assert set(saved) == {"registered", "meta", "results"}
    assert {"triton", "date", "git_commit", "module_hashes", "tool_hash", "targets", "quick",
            "partial", "wall_s", "compiled", "reused", "compile_s", "compile_cpu_s",
            "shared_limit"} <= set(saved["meta"])
    fields = set(record(Result(**vars(Job(0, 0, 0)))))
    assert all(set(r) == fields for r in saved["results"])
    compiled = {(r["module"], r["kernel"], r["target"]) for r in saved["results"] if r["ok"]}
    for module, names in saved["registered"].items():
        for name in names:
            for target in saved["meta"]["targets"]:
                assert (module, name, target) in compiled
