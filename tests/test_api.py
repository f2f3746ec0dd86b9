"""The Python API keeps its functions, whatever submodules get imported."""

import importlib
import importlib.util
import types

import lethe


def test_no_api_function_is_shadowed_by_a_submodule_of_the_same_name():
    # `import lethe.finetune` (done by the leakage study, when that module existed) used to replace the function
    # lethe.finetune with the module, so the second call in one script failed with "'module' object is not callable"
    for name in lethe.__all__:
        if importlib.util.find_spec(f"lethe.{name}") is not None:
            importlib.import_module(f"lethe.{name}")
        assert not isinstance(getattr(lethe, name), types.ModuleType), f"lethe.{name} is a module, not the API"
