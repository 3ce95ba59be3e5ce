"""Where ``cnn.kernels`` comes from.

The kernels are the repository's top-level folder ``kernels/``. An installed cnn (a wheel, or
``pip install -e .``) carries that folder as its subpackage ``cnn.kernels``: a top-level
``kernels`` would clash with another distribution of that name. A checkout used without
installing, with its root on ``sys.path`` (``python -m ...`` from the root), has no such
subpackage; importing this module loads the folder under that name, once. So does a checkout
whose ``cnn`` is imported while another checkout is installed in editable mode (a second
worktree): its own kernels belong with its own ``cnn``, not the installed checkout's.
"""
import importlib.util
import sys
from pathlib import Path

NAME = "cnn.kernels"

_folder = Path(__file__).resolve().parent.parent / "kernels"
# A checkout: the project file beside cnn/ and kernels/ (a wheel installs no such file).
_checkout = (_folder.parent / "pyproject.toml").is_file() and (_folder / "__init__.py").is_file()
_found = importlib.util.find_spec(NAME)
if _found is None or (_checkout and _found.origin is not None
                      and Path(_found.origin).resolve().parent != _folder):
    _spec = importlib.util.spec_from_file_location(NAME, _folder / "__init__.py",
                                                   submodule_search_locations=[str(_folder)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = _module
    _spec.loader.exec_module(_module)
