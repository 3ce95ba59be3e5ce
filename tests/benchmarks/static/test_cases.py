"""benchmarks.static.cases: every case is built from the library's own launchers on meta
tensors, specialised as a launch specialises it, and every kernel a launcher can launch has
cases. The cases are built in a subprocess with TRITON_INTERPRET=0 (the ``probe`` fixture): the
launchers pick GPU blocks there."""
import ast

from support import REPO  # noqa: E402

_CASES_PROBE = """
import json
from benchmarks.static.cases import conv_cases, unwrap, LAYERS, LAYOUTS, PASSES
out = {}
for c in conv_cases():
    key = " ".join((unwrap(c.kernel)[0].__name__, c.layer, c.layout, c.dtype, c.label))
    ints = {k: v for k, v in c.constexprs.items() if type(v) is int}
    out[key] = dict(signature=c.signature, ints=ints, configs=c.configs, gemm=c.gemm,
                    kept=len(c.pruned_configs), conversion_bytes=c.conversion_bytes,
                    min_bytes=c.min_bytes, params=[p.name for p in unwrap(c.kernel)[0].params],
                    covered=sorted(set(c.signature) | set(c.constexprs)))
print(json.dumps(dict(cases=out, layers=[l.name for l in LAYERS],
                      layouts=[l[0] for l in LAYOUTS], passes=list(PASSES))))
"""


def test_conv_cases_are_specialised_as_a_launch_specialises_them(probe):
    """The conv cases come from the launchers' own arguments: unit strides become constants and
    multiples of 16 are marked divisible, as Triton's launcher does, so the report describes the
    kernel that runs; every layer x layout x dtype x pass is there."""
    found = probe(_CASES_PROBE)
    cases = found["cases"]
    example = "example.resnet.3x3.b32"
    fwd_cl = cases[f"conv2d_forward_kernel {example} channels_last fp16 forward"]
    assert fwd_cl["ints"]["sxc"] == fwd_cl["ints"]["swi"] == fwd_cl["ints"]["syc"] == 1
    assert fwd_cl["signature"]["c_in_g"] == "i32:16"  # 64 channels per group
    assert fwd_cl["signature"]["H"] == "i32"  # 56 is not a multiple of 16
    assert fwd_cl["signature"]["x_ptr"] == "*fp16"
    assert fwd_cl["gemm"] == [32 * 56 * 56, 64, 9 * 64]
    # 64 output channels: the launcher's pruning clamps BLOCK_N to 64, so two of the ten
    # configs become duplicates of others and are dropped.
    assert fwd_cl["configs"] == "all" and fwd_cl["kept"] == 8
    assert fwd_cl["min_bytes"] == 2 * (32 * 64 * 56 * 56 * 2 + 64 * 64 * 9 + 64)
    # The statistics epilogue keeps only the tiles its launcher allows.
    assert cases[f"conv2d_forward_kernel {example} channels_last fp16 forward stats"]["kept"] < 10
    # The weight gradient is two launches there (split GEMM, then the sum of its slots).
    wgrad = cases[f"conv2d_weight_grad_kernel {example} channels_last fp16 wgrad "
                  "conv2d_weight_grad_kernel"]
    assert wgrad["signature"]["dw_ptr"] == "*fp32" and "SPLIT" not in wgrad["ints"]
    assert cases["conv2d_forward_kernel mnist.conv1.b64 nchw tf32 forward"]["configs"] == "first"
    # A transposed conv's forward is the input-gradient kernel of the conv it transposes: per
    # stride phase, the transposed layer's input pixels by its output channels, reducing over
    # its input channels (and the taps of the phase).
    unet = cases["conv2d_input_grad_kernel unet.up2x2s2.transposed.b16 channels_last fp16 dgrad"]
    assert unet["gemm"] == [16 * 32 * 32, 128, 256]
    dcgan = cases["conv2d_input_grad_kernel dcgan.g4x4s2.transposed.b128 nchw bf16 dgrad"]
    assert dcgan["gemm"] == [128 * 8 * 8, 128, 2 * 2 * 256]
    for layer in found["layers"]:
        for layout in found["layouts"]:
            for dtype in ("fp16", "bf16", "tf32"):
                for conv_pass in found["passes"]:
                    assert any(f" {layer} {layout} {dtype} {conv_pass}" in key for key in cases), \
                        (layer, layout, dtype, conv_pass)
    for case in cases.values():  # every argument but the autotuned tiles is typed or constant
        tiles = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_C", "BLOCK_R"}
        assert set(case["params"]) - tiles <= set(case["covered"])
        assert case["min_bytes"] > 0 and case["conversion_bytes"] >= 0


_OPS_PROBE = """
import ast, importlib, json, pkgutil, sys, textwrap
import triton
from cnn import kernels
from benchmarks.static.cases import all_cases, unwrap, KERNEL_MODULES

for info in pkgutil.walk_packages(kernels.__path__, "cnn.kernels."):
    importlib.import_module(info.name)
defined = {}  # every @triton.jit function of kernels/, by (module, name)
for name, module in list(sys.modules.items()):
    if name.startswith("cnn.kernels.") and module is not None:
        for value in vars(module).values():
            if isinstance(value, triton.runtime.KernelInterface):
                fn = unwrap(value)[0]
                if fn.__module__ == name:
                    defined[(name, fn.__name__)] = fn
called = set()  # those another @triton.jit function calls: device helpers, not launched
for fn in defined.values():
    scope = fn.fn.__globals__
    for node in ast.walk(ast.parse(textwrap.dedent(fn.src))):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                called.add(id(scope.get(f.id)))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                called.add(id(getattr(scope.get(f.value.id), f.attr, None)))
cases = all_cases()
ops = {}
for c in cases:
    if c.layer == "-":
        ops[unwrap(c.kernel)[0].__name__ + " " + c.label + " " + str(len(ops))] = dict(
            module=c.module, signature=c.signature, options=c.options, dtype=c.dtype,
            constexprs={k: str(v) for k, v in c.constexprs.items()})
print(json.dumps(dict(
    launched=sorted(" ".join(k) for k, fn in defined.items() if id(fn) not in called),
    cased=sorted({c.module + " " + unwrap(c.kernel)[0].__name__ for c in cases}),
    modules=sorted({c.module for c in cases}), kernel_modules=sorted(KERNEL_MODULES),
    patched=[" ".join(k) for k, fn in defined.items() if "run" in vars(fn)], ops=ops)))
"""


def test_every_kernel_a_launcher_launches_has_cases(probe):
    """Every @triton.jit kernel of kernels/ that no other kernel calls (so a launcher launches
    it) is in the case list, and only those; the recording leaves every kernel as it was."""
    found = probe(_OPS_PROBE)
    assert found["cased"] == found["launched"]
    assert len(found["launched"]) == 22
    assert found["modules"] == found["kernel_modules"]
    assert found["patched"] == []


def _op(ops, kernel, label):
    return next(v for k, v in ops.items() if k.startswith(f"{kernel} {label} "))


def test_op_cases_come_from_the_launchers_launches(probe):
    """The other ops' cases are what their launchers launch on meta tensors: each dtype and
    constexpr variant, the sizes specialised as Triton's launcher does (a size of 1 becomes a
    constant, multiples of 16 are marked divisible, past 2**31 is i64), the launch's warps."""
    ops = probe(_OPS_PROBE)["ops"]
    per_kernel = {}
    for key in ops:
        per_kernel[key.split()[0]] = per_kernel.get(key.split()[0], 0) + 1
    assert per_kernel == {
        "max_pool2d_forward_kernel": 9, "max_pool2d_backward_kernel": 9,
        "avg_pool2d_forward_kernel": 11, "avg_pool2d_backward_kernel": 11,
        "batch_norm_stats_kernel": 8, "batch_norm_normalize_kernel": 16,
        "batch_norm_finalize_kernel": 8, "batch_norm_backward_reduce_kernel": 16,
        "batch_norm_backward_input_kernel": 16, "batch_norm_backward_sums_kernel": 4,
        "relu_kernel": 16, "activation_kernel": 36, "batch_norm_merge_kernel": 2,
        "batch_norm_update_stats_kernel": 4, "gated_gradient_kernel": 20}
    assert all(op["options"] == {"num_warps": 4} for op in ops.values())
    first = next(iter(ops))
    assert first.startswith("max_pool2d_forward_kernel forward[fp16,window,nchw] ")
    window = ops[first]
    assert window["signature"]["x_ptr"] == "*fp16" and window["signature"]["idx_ptr"] == "*i64"
    assert window["constexprs"]["sxw"] == window["constexprs"]["pad_h"] == "1"
    assert window["signature"]["C"] == "i32:16" and window["constexprs"]["ADAPTIVE"] == "False"
    wide = _op(ops, "max_pool2d_forward_kernel", "forward[fp32,window,nchw,int64]")
    assert wide["signature"]["total"].startswith("i64")
    assert wide["constexprs"]["INDEX_64"] == "True" and wide["constexprs"]["STORE_INDICES"] == \
        "False"
    adaptive = _op(ops, "avg_pool2d_backward_kernel", "backward[bf16,adaptive,channels_last]")
    assert adaptive["constexprs"]["ADAPTIVE"] == adaptive["constexprs"]["CHANNELS_LAST"] == "True"
    divisor = _op(ops, "avg_pool2d_forward_kernel", "forward[fp32,window,divisor_override,nchw]")
    assert divisor["constexprs"]["HAS_DIVISOR"] == "True"
    for kind, flat, tiles in (("flat", "True", ("256", "8")), ("strided", "False", ("32", "64"))):
        stats = _op(ops, "batch_norm_stats_kernel", f"batch_norm_stats[fp16,{kind}]")
        assert stats["constexprs"]["HW_FLAT"] == flat
        assert (stats["constexprs"]["BLOCK_HW"], stats["constexprs"]["BLOCK_C"]) == tiles
        assert stats["signature"]["stats_ptr"] == "*fp32" and stats["dtype"] == "fp16"
    finalize = _op(ops, "batch_norm_finalize_kernel", "batch_norm_finalize[fp64,cumulative=True]")
    assert finalize["constexprs"]["CUMULATIVE"] == finalize["constexprs"]["UPDATE_RUNNING"] == \
        "True"
    assert finalize["signature"]["nbt_ptr"] == "*i64"
    assert (finalize["constexprs"]["BLOCK_T"], finalize["constexprs"]["BLOCK_C"]) == ("64", "32")
    dense = _op(ops, "relu_kernel", "relu[bf16,backward,dense]")
    assert dense["constexprs"]["S1"] == dense["constexprs"]["S3"] == "1"
    assert dense["constexprs"]["DENSE"] == dense["constexprs"]["BACKWARD"] == "True"
    assert dense["constexprs"]["UPCAST"] == "False" and dense["signature"]["numel"] == "i32:16"
    strided = _op(ops, "relu_kernel", "relu[fp64,forward,strided]")
    assert strided["constexprs"]["DENSE"] == "False" and strided["signature"]["x_ptr"] == "*fp64"


def test_no_kernel_module_carries_a_hook_for_the_tool():
    """The tool builds its cases from the launchers: no module of kernels/ defines
    compile_cases (or imports the tool)."""
    for path in sorted((REPO / "kernels").rglob("*.py")):
        tree = ast.parse(path.read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert "compile_cases" not in functions, path
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.startswith("benchmarks") for m in imported), path
