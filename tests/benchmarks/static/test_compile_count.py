"""benchmarks.static.compile_count: compiles and tuning runs counted from autotune keys and argument
specialisations, as Triton's autotuner and launcher make them (no GPU: the counts come from the
launch arguments). Runs in a subprocess with TRITON_INTERPRET=0, where the GPU configs exist."""
import json
import subprocess
import sys

from support import REPO  # noqa: E402

_PROBE = '''
import json
import torch
import triton
import triton.language as tl
from benchmarks.static import compile_count

@triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (16, 32, 64)], key=["n"])
@triton.jit
def tuned(x_ptr, n, BLOCK: tl.constexpr):
    pass

@triton.jit
def plain(x_ptr, n, BLOCK: tl.constexpr):
    pass

x16 = torch.empty(8, device="meta", dtype=torch.float16)
x32 = torch.empty(8, device="meta", dtype=torch.float32)
steps = []
counter = compile_count.CompileCounter()
for kernel, args in [(tuned, dict(x_ptr=x16, n=64)),   # new key: tune, 3 compiles
                     (tuned, dict(x_ptr=x16, n=64)),   # cached
                     (tuned, dict(x_ptr=x16, n=48)),   # new key, same specialisation: tune only
                     (tuned, dict(x_ptr=x16, n=50)),   # new key, n not divisible by 16
                     (tuned, dict(x_ptr=x32, n=64)),   # new dtype: new key and specialisation
                     (plain, dict(x_ptr=x16, n=1, BLOCK=16)),   # 1 is a constant
                     (plain, dict(x_ptr=x16, n=7, BLOCK=16)),
                     (plain, dict(x_ptr=x16, n=9, BLOCK=16))]:  # same as 7
    counter.call(kernel, args)
    steps.append([counter.compiles, counter.tuning_runs])
print(json.dumps(dict(steps=steps, mnist=compile_count.mnist_report(train=6000),
                      full=compile_count.mnist_report())))
'''


def test_compiles_and_tuning_runs_follow_keys_and_specialisations(tmp_path, compiled_env):
    probe = tmp_path / "probe.py"  # a file: Triton reads the source of the kernels defined there
    probe.write_text(_PROBE)
    proc = subprocess.run([sys.executable, str(probe)], cwd=REPO, env=compiled_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert out["steps"] == [[3, 1], [3, 1], [3, 2], [6, 3], [9, 4], [10, 4], [11, 4], [11, 4]]
    # The MNIST run: 6000 training images leave a last batch of 6000 % 64 = 48.
    mnist = out["mnist"]
    assert [s["batches"] for s in mnist["steps"]] == ["train", "train last partial", "eval"]
    assert [s["batch"] for s in mnist["steps"]] == [64, 48, 1000]
    counts = [(s["compiles"], s["tuning_runs"]) for s in mnist["steps"]]
    assert counts == sorted(counts) and counts[0][0] >= 5  # 5 conv kernels in a training step
    assert set(mnist["per_kernel"]) == {"conv2d_forward_kernel", "conv2d_weight_grad_kernel",
                                        "conv2d_weight_grad_reduce_kernel",
                                        "conv2d_input_grad_kernel"}
    # 48000 images (the seed's split) make no partial batch.
    assert [s["batches"] for s in out["full"]["steps"]] == ["train", "eval"]
