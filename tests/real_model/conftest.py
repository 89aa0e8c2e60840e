"""A real language model in the test suite: llama-cpp-python's OpenAI-compatible server on loopback.

Every test in this directory is marked ``real_model`` (select them with ``-m real_model``). Fixtures:

* ``llama_server`` (session): one server for the whole run (:func:`tests.real_model.llama.start_llama_server`),
  serving Gemma 3 270M from the GGUF assembled into the cache directory; stopped at the end.
* ``real_catalogue`` (session): the test catalogue for that server as a file (``ORX_CATALOGUE``): three
  models, ``local/lark``, ``local/wren`` and ``local/finch``, of three families, one set of weights.

Helpers (a private server, a catalogue for any server, the providers gRPC server on a catalogue) are in
:mod:`tests.real_model.llama`. Without llama-cpp-python installed, the tests here are skipped with that
reason; ``make test`` installs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_model.llama import LlamaServer, catalogue_for, ensure_gguf, gguf_path, start_llama_server

REAL_MODEL_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``real_model`` (select them with ``-m real_model``)."""
    for item in items:
        if REAL_MODEL_DIR in item.path.parents:
            item.add_marker(pytest.mark.real_model)


def _llama_cpp_installed() -> bool:
    """Whether ``llama_cpp`` can be imported (checked without loading its native library here)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The shared llama server (see the module docstring)."""
    if not _llama_cpp_installed():
        pytest.skip("llama-cpp-python is not installed: `make test` (or pip install -e '.[dev]') installs it")
    model = ensure_gguf(gguf_path())
    server = start_llama_server(model, tmp_path_factory.mktemp("llama") / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_catalogue(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test catalogue for the shared server, as a file (``ORX_CATALOGUE``)."""
    path = tmp_path_factory.mktemp("catalogue") / "catalogue.toml"
    path.write_text(catalogue_for(llama_server.base_url), encoding="utf-8")
    return path
