"""How an op of ours becomes ``torch.ops.cnn.<name>``, and which path a call takes.

Each op is one implementation (the launcher call), one fake (output shapes, dtypes and strides
without data), and, where it is differentiable, one ``setup_context`` and one ``backward``.
They are registered with ``torch.library.custom_op`` (what torch.compile, torch.export and
opcheck see) and also assembled into a plain ``torch.autograd.Function`` over the very same
functions. A call goes to the library op whenever anything traces it (Dynamo, export, make_fx,
FakeTensor, functorch) and to the Function in plain eager mode, where it costs ~5 us of host
time instead of the custom op's ~18 us. Under torch.func's grad/vjp/jvp a third twin takes the
call: the same Function with a separate setup_context, which those transforms require (neither
the ctx-style Function nor torch.library's autograd runs under them); vmap stays on the library
op. Same code every way; only the dispatch differs.

An op that both computes and updates state in place (training-mode batch norm, alone or fused
after a conv: its output and the running statistics) is two library ops, because
torch.library registers no autograd formula for an op that mutates its arguments: a functional
op with its autograd, and an update that mutates the state and needs none. ``StatefulOp``
calls the pair as one; in plain eager mode it runs one Function over a fused implementation
instead, which updates the state inside the functional op's own launches
(see its docstring for why, and what it guarantees).
"""
import torch

NAMESPACE = "cnn"
LIBRARY = torch.library.Library(NAMESPACE, "FRAGMENT")  # extra kernels (autocast)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def is_traced(args) -> bool:
    """Whether a call with these arguments must go through the dispatcher: under Dynamo or
    export, under a dispatch mode (make_fx, FakeTensorMode), a functorch transform, or with
    any tensor that is not a plain one (FakeTensor, FunctionalTensor, other subclasses)."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or torch._C._are_functorch_transforms_active()):
        return True
    return any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN for a in args)


# The modes that trace (make_fx), fake (FakeTensor) or functionalize; a user's own dispatch
# mode (one that records the ops, say) is none of them.
_TRACING_MODES = tuple(torch._C._TorchDispatchModeKey.__members__.values())


def must_be_functional(args) -> bool:
    """Whether a call must run functional library ops only, because something records or
    transforms it as a graph: Dynamo or export, a functorch transform, a tracing, fake or
    functionalizing mode, or any tensor that is not a plain one. Unlike ``is_traced``, a
    user's own dispatch mode alone does not count: eager code stays eager under it."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return True
    if any(torch._C._get_dispatch_mode(key) is not None for key in _TRACING_MODES):
        return True
    return any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN for a in args)


_is_compiling = torch.compiler.is_compiling
_dispatch_stack_len = torch._C._len_torch_dispatch_stack
_transforms_active = torch._C._are_functorch_transforms_active


def tracing() -> bool:
    """``is_traced`` without looking at arguments: for hot paths that check their tensors'
    types themselves (a call with a plain ``torch.Tensor`` only)."""
    return _is_compiling() or _dispatch_stack_len() > 0 or _transforms_active()


def plain_backward() -> bool:
    """Whether an eager Function's backward may call its launcher directly: the backward is
    not itself differentiated (create_graph turns grad mode on) nor traced."""
    return not (torch.is_grad_enabled() or tracing())


def direct_backward(function: type) -> type:
    """``function`` with the autograd engine calling its ``backward`` itself, without the
    Python method torch puts in between (``BackwardCFunction.apply``, which looks up backward
    and vjp and reads ``boxed_grads_call`` on every call; ~0.7 us of a ~35 us forward and
    backward). For a Function that defines backward, and neither vjp nor boxed_grads_call:
    then that method calls ``backward(ctx, *grads)``, which is what the engine now calls."""
    if function.vjp is not torch.autograd.Function.vjp or \
            getattr(function, "boxed_grads_call", False):
        raise TypeError(f"{function.__name__}: direct_backward needs a plain backward")
    function._backward_cls.apply = function.backward
    return function


def direct_apply(function: type):
    """``function.apply`` without the Python layer torch wraps around the C++ apply, for
    plain eager calls (no torch.func transform active: the callers check ``tracing``) of a
    Function without setup_context. That layer then only unwraps tensors that outlived a
    torch.func transform, which this does for the first argument (the only tensor our eager
    Functions take); ~1.5 us of a ~40 us forward and backward. The backward is called
    directly too (``direct_backward``)."""
    direct_backward(function)
    c_apply = super(torch.autograd.Function, function).apply
    unwrap_if_dead = torch._C._functorch.unwrap_if_dead

    def apply(input, *args):
        return c_apply(unwrap_if_dead(input), *args)
    return apply


def _under_func_grad() -> bool:
    """Whether the innermost active torch.func transform differentiates (grad, vjp, jvp):
    vmap, functionalization (AOTAutograd's tracing) and plain eager calls take the other
    paths."""
    if not torch._C._are_functorch_transforms_active():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter
    interpreter = retrieve_current_functorch_interpreter()
    return interpreter is not None and interpreter.key() in (TransformType.Grad,
                                                             TransformType.Jvp)


class LibraryOp:
    """``torch.ops.cnn.<name>`` and its eager twin. Call it with the op's positional args."""

    def __init__(self, name: str, impl, fake, *, setup_context=None, backward=None,
                 mutates_args=()):
        self.name = name
        self.custom_op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl,
                                                 mutates_args=mutates_args)
        self.custom_op.register_fake(fake)
        self.overload = getattr(getattr(torch.ops, NAMESPACE), name).default
        self.impl = impl
        self.setup_context, self.backward = setup_context, backward
        self.function = None
        if backward is None:
            return
        if mutates_args:
            # torch.library registers no autograd formula for an op that mutates its inputs:
            # split it into a functional op and an update (a StatefulOp joins them).
            raise ValueError(f"{name}: an op that mutates its arguments cannot have a backward")
        self.custom_op.register_autograd(backward, setup_context=setup_context)
        forward = impl

        def forward_and_setup(ctx, *args):
            # ctx-style forward: a Function with its own setup_context binds every call's
            # arguments to forward's signature (inspect.signature), ~10 us per call.
            output = forward(*args)
            setup_context(ctx, args, output)
            return output

        self.function = direct_backward(type(
            f"{_camel(name)}Function", (torch.autograd.Function,), {
                "forward": staticmethod(forward_and_setup), "backward": staticmethod(backward),
                "__doc__": f"Autograd of torch.ops.{NAMESPACE}.{name}."}))
        # The same Function with a separate setup_context, as torch.func's grad/vjp/jacrev
        # need (neither the ctx-style Function nor torch.library's autograd runs under them).
        self.func_function = type(f"{_camel(name)}FuncFunction", (torch.autograd.Function,), {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context), "backward": staticmethod(backward),
            "__doc__": f"Autograd of torch.ops.{NAMESPACE}.{name} under torch.func."})

    def __call__(self, *args):
        if self.function is not None and _under_func_grad():
            return self.func_function.apply(*args)
        if is_traced(args):
            return self.overload(*args)
        if self.function is None:
            if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                               for a in args):
                # As the library op does: no autograd formula, so no silent zero gradient.
                return self.overload(*args)
            return self.impl(*args)
        return self.function.apply(*args)

    def register_autocast(self, cast: int) -> None:
        """Inside ``torch.autocast`` the first ``cast`` arguments (floating tensors) run in the
        autocast dtype, as torch's convolution does: whatever dtype the region asks for."""
        overload = self.overload
        for device in ("cpu", "cuda"):
            key = "Autocast" + torch._C._dispatch_key_for_device(device)
            excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

            def autocast(*args, device=device, excluded=excluded):
                dtype = torch.get_autocast_dtype(device)
                args = tuple(a.to(dtype) if i < cast and isinstance(a, torch.Tensor)
                             and a.is_floating_point() else a for i, a in enumerate(args))
                with torch._C._ExcludeDispatchKeyGuard(excluded):
                    return overload(*args)

            overload.py_impl(getattr(torch._C.DispatchKey, key))(autocast)
            LIBRARY.impl(self.name, lambda _keyset, *args, f=autocast: f(*args), key,
                         with_keyset=True)


class StatefulOp:
    """A functional op and the in-place update of state that its outputs feed, called as one:
    ``stateful(*op_args, *state)`` returns ``op(*op_args)`` after ``update(*update_args(op_args,
    state, outputs))`` (e.g. batch norm's output, then its running statistics).

    op: a LibraryOp that mutates nothing, its autograd registered with torch.library, so
    torch.compile, export, AOTAutograd and opcheck can differentiate it. update: a LibraryOp
    that mutates the state and has nothing to differentiate. Traced or under torch.func, a
    call runs exactly that pair (``must_be_functional``).

    In eager mode (a user's own dispatch mode included) the update would cost a launch of its
    own, and a launch is most of a small layer's time; there one autograd.Function runs
    ``fused(*op_args, *state)`` instead: op's outputs with the state updated inside op's own
    launches, differentiated by op's own setup_context and backward (the state gets no
    gradient). ``fused`` must give the very bits of the pair, outputs and state alike; the
    op's tests run both paths and compare them.
    """

    def __init__(self, op: LibraryOp, update: LibraryOp, fused, update_args):
        self.op, self.update, self.update_args = op, update, update_args
        arity = len(op.overload._schema.arguments)
        setup_context, backward = op.setup_context, op.backward

        def forward(ctx, *args):
            output = fused(*args)
            setup_context(ctx, args[:arity], output)
            return output

        def backward_and_state(ctx, *grads):
            grads = backward(ctx, *grads)
            return (*grads, *(None,) * (len(ctx.needs_input_grad) - len(grads)))

        name = _camel(op.name)
        self.function = direct_backward(type(
            f"{name}StatefulFunction", (torch.autograd.Function,), {
                "forward": staticmethod(forward), "backward": staticmethod(backward_and_state),
                "__doc__": f"Eager autograd of torch.ops.{NAMESPACE}.{op.name} with its "
                           "update."}))
        self.arity = arity

    def call_pair(self, *args):
        """The functional op, then the update: what tracing sees (also usable eagerly)."""
        op_args, state = args[:self.arity], args[self.arity:]
        output = self.op(*op_args)
        self.update(*self.update_args(op_args, state, output))
        return output

    def __call__(self, *args):
        if must_be_functional(args):
            return self.call_pair(*args)
        return self.function.apply(*args)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def none_unless(flag: bool, t):
    """A gradient output the caller asked for, else None (ops return empty placeholders)."""
    return t if flag else None


def placeholder(like: torch.Tensor) -> torch.Tensor:
    """The (0,) tensor an op returns for an output nobody asked for (ops return tensors)."""
    return like.new_empty((0,))
