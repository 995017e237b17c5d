"""The examples in docstrings run and print what they say (the documentation site shows them)."""

import doctest
import importlib

import pytest

MODULES_WITH_EXAMPLES = ("gags.levels", "gags.field", "gags.segment.prompts", "gags.bench.ablation")


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples: remove it from MODULES_WITH_EXAMPLES"
    assert result.failed == 0


def test_every_module_with_examples_is_listed():
    """A module whose docstrings gain an example must be added above (so that the example is checked)."""
    import pkgutil

    import gags

    found = set()
    for info in pkgutil.walk_packages(gags.__path__, "gags."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional extras (viewer, ray) missing
            continue
        finder = doctest.DocTestFinder()
        if any(test.examples for test in finder.find(module, module=module)):
            found.add(info.name)
    assert found == set(MODULES_WITH_EXAMPLES)
