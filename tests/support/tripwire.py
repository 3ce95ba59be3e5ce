"""A tripwire on every Triton kernel: proves that a call launched nothing (an error path must
raise before any launch) or counts what it launched."""
import contextlib

from cnn import kernels


@contextlib.contextmanager
def launches(around=contextlib.nullcontext):
    """Yields the list of kernel names launched inside the block (each kernel's innermost
    ``run`` is wrapped, so autotuned and plain kernels alike are seen). ``around()`` is a
    context entered for the duration of each launch (to tell a launch's own work, such as the
    interpreter's, from the code around it)."""
    launched, originals = [], []
    watched = kernels.runtime.launchable_kernels()
    # Watching nothing would make every "nothing launched" check pass whatever happened.
    assert watched, "no Triton kernel found to watch"
    for kernel in watched:
        original = kernel.run

        def run(*args, _orig=original, _name=kernel.fn.__name__, **kwargs):
            launched.append(_name)
            with around():
                return _orig(*args, **kwargs)
        originals.append((kernel, original))
        kernel.run = run
    try:
        yield launched
    finally:
        for kernel, original in originals:
            kernel.run = original
