"""cnn.kernels.direct_launch: a planned launch calls the compiled kernel's launcher directly,
with the very argument list Triton's own binder gives, once a combination of per-call
arguments was launched through ``kernel.run``.

Without a GPU nothing compiles or launches, so the probe runs in a compiled-mode subprocess
(TRITON_INTERPRET=0, where kernels are JITFunctions) with Triton's binder built for an sm_90
target, and fakes for the rest: ``kernel.run`` (returns a compiled kernel whose launcher
records its arguments) and the driver's current device and stream. What only a GPU can
confirm (the launch itself, and the time it saves) is the GPU check's configs stage.
"""
import json
import os
import subprocess
import sys

import torch
from cnn.kernels import direct_launch
from cnn.kernels.pool2d import max_pool2d as max_launchers
from cnn.kernels.runtime import INTERPRET
from support import REPO, compiled_env

_PROBE = '''
import json
import types

import torch
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

from cnn.kernels import direct_launch
from cnn.kernels.pool2d import max_pool2d as pool
from cnn.kernels.pool2d.geometry import Pool2dGeometry, knobs as pool_knobs

kernel = pool.max_pool2d_backward_kernel
geometry = Pool2dGeometry.window((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False)
plan = pool.backward_plan(geometry, torch.contiguous_format, torch.float32, pool_knobs())
binder = create_function_from_signature(kernel.signature, kernel.params,
                                        make_backend(GPUTarget("cuda", 90, 32)))


class Compiled:
    function, packed_metadata = "function", "metadata"

    def __init__(self):
        self.launches = []

    def run(self, *args):  # the launcher (CompiledKernel.run gives it)
        self.launches.append(args)


compiled, kernel_runs = Compiled(), []
kernel.run = lambda *args, **kwargs: kernel_runs.append((args, kwargs)) or compiled
kernel.device_caches = {0: ({}, {}, None, None, binder)}
direct_launch.driver = types.SimpleNamespace(active=types.SimpleNamespace(
    get_current_device=lambda: 0, get_current_stream=lambda device: 7))

launch = direct_launch.DirectLaunch(kernel, plan.args, plan.options)
dy, dx = torch.randn(2, 3, 4, 4), torch.empty(2, 3, 8, 8)
idx = torch.zeros(2, 3, 4, 4, dtype=torch.int64)
args = (dy, idx, dx, *dy.stride(), *idx.stride())
steps = []


def step(*call):
    launch(*call)
    steps.append([len(kernel_runs), len(compiled.launches)])


step(*args)  # first: kernel.run
step(*args)  # direct
options = {k: v for k, v in plan.options.items() if k not in ("grid", "warmup")}
bound = tuple(binder(*args, *plan.args, **options)[0].values())
sent = compiled.launches[0]
same = sent[:9] == (*plan.grid, 1, 1, 7, "function", "metadata", None, None, None) and \\
    len(sent) - 9 == len(bound) == len(kernel.params) and \\
    all(a is b if isinstance(a, torch.Tensor) else a == b for a, b in zip(sent[9:], bound))
misaligned = torch.randn(dy.numel() + 1)[1:].view_as(dy)  # 4 bytes past an aligned start
step(misaligned, idx, dx, *misaligned.stride(), *idx.stride())  # new combination: kernel.run
step(misaligned, idx, dx, *misaligned.stride(), *idx.stride())  # then direct
permuted = torch.randn(2, 4, 4, 3).permute(0, 3, 1, 2)  # other strides: kernel.run
step(permuted, idx, dx, *permuted.stride(), *idx.stride())
step(dy.double(), idx, dx, *dy.stride(), *idx.stride())  # other dtype: kernel.run
def hook(metadata):
    pass


knobs.runtime.launch_enter_hook.add(hook)
step(*args)  # a profiler's hook: kernel.run builds the launch metadata
knobs.runtime.launch_enter_hook.remove(hook)
step(*args)  # direct again

# A Triton whose binder is not laid out as expected: the combination stays on kernel.run.
kernel.device_caches = {0: (lambda *args, **kwargs: ({}, [], {}),)}
odd = direct_launch.DirectLaunch(kernel, plan.args, plan.options)
odd(*args)
odd(*args)
print(json.dumps(dict(steps=steps, same=same, odd=[len(kernel_runs), len(compiled.launches)])))
'''


def test_a_repeated_combination_launches_directly_with_tritons_own_arguments():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=compiled_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["same"]  # grid, stream, function, metadata, then every bound argument
    # (kernel.run calls, direct launches) after each step of the probe.
    assert result["steps"] == [[1, 0], [1, 1], [2, 1], [2, 2], [3, 2], [4, 2], [5, 2], [5, 3]]
    assert result["odd"] == [7, 3]


def test_a_plan_launches_directly_only_where_kernels_are_compiled():
    """Through the interpreter, or compiled without a GPU (the static tools), nothing
    launches: a plan gets no DirectLaunch and its launch site calls kernel.run; nor does an
    empty launch (no grid)."""
    kernel = max_launchers.max_pool2d_backward_kernel
    planned = direct_launch.direct_or_none(kernel, (), {"grid": (1,), "warmup": False})
    assert (planned is not None) == direct_launch.ENABLED
    assert direct_launch.ENABLED == (not INTERPRET and torch.cuda.is_available() and
                                     os.environ.get("CNN_DIRECT_LAUNCH", "1") not in ("0", ""))
    assert direct_launch.direct_or_none(kernel, (), {"grid": None, "warmup": False}) is None
