"""Doctest namespace for the examples in gpunet's docstrings (run by the test suite)."""
import pytest


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    import gpunet
    doctest_namespace["gpunet"] = gpunet
    doctest_namespace["np"] = gpunet.backend.numpy
