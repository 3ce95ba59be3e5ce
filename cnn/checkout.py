"""Where ``cnn.kernels`` comes from.

The kernels are the repository's top-level folder ``kernels/``. An installed cnn (a wheel, or
``pip install -e .``) carries that folder as its subpackage ``cnn.kernels``: a top-level
``kernels`` would clash with another distribution of that name. A checkout used without
installing, with its root on ``sys.path`` (``python -m ...`` from the root), has no such
subpackage; importing this module loads the folder under that name, once.
"""
import importlib.util
import sys
from pathlib import Path

NAME = "cnn.kernels"

if importlib.util.find_spec(NAME) is None:
    _folder = Path(__file__).resolve().parent.parent / "kernels"
    _spec = importlib.util.spec_from_file_location(NAME, _folder / "__init__.py",
                                                   submodule_search_locations=[str(_folder)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = _module
    _spec.loader.exec_module(_module)
