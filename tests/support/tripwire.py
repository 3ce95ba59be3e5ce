"""A tripwire on every Triton kernel: proves that a call launched nothing (an error path must
raise before any launch) or counts what it launched."""
import contextlib

import kernels


@contextlib.contextmanager
def launches():
    """Yields the list of kernel names launched inside the block (each kernel's innermost
    ``run`` is wrapped, so autotuned and plain kernels alike are seen)."""
    launched, originals = [], []
    for kernel in kernels.runtime.launchable_kernels():
        original = kernel.run

        def run(*args, _orig=original, _name=kernel.fn.__name__, **kwargs):
            launched.append(_name)
            return _orig(*args, **kwargs)
        originals.append((kernel, original))
        kernel.run = run
    try:
        yield launched
    finally:
        for kernel, original in originals:
            kernel.run = original
