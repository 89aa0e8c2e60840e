"""The public surface of ``orchestratex``: what another team may import, pinned (as httpx's test_exported_members).

Adding a name to ``__all__`` or removing one is a decision: change ``EXPORTED`` with it.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys

import orchestratex

EXPORTED = [
    "REQUEST_ID_HEADER",
    "TENANT_HEADER",
    "Address",
    "Cancelled",
    "ConfigError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OrxError",
    "PermissionDenied",
    "ResourceExhausted",
    "Secret",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "from_rpc_error",
    "open_channel",
    "v1",
]

# What a client must not pay for: the services' dependencies, and the services themselves. (Not
# grpc_reflection: `import grpc` itself imports it when it is installed.)
SERVER_ONLY = (
    "aiohttp",
    "aiosqlite",
    "gateway",
    "httpx",
    "jsonschema",
    "numpy",
    "orjson",
    "pymongo",
    "services",
    "sklearn",
    "uvloop",
)


def test_all_is_pinned() -> None:
    assert orchestratex.__all__ == EXPORTED


def test_every_name_in_all_exists() -> None:
    missing = [name for name in orchestratex.__all__ if not hasattr(orchestratex, name)]
    assert not missing


def test_every_public_member_is_in_all() -> None:
    # Submodules become attributes of the package once anyone imports them: only other names count.
    public = {
        name
        for name, value in vars(orchestratex).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public <= set(orchestratex.__all__)


def test_exported_members_come_from_the_library() -> None:
    for name in orchestratex.__all__:
        member = getattr(orchestratex, name)
        if inspect.ismodule(member):
            assert member.__name__ == f"orchestratex.{name}"
        elif inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__.startswith("orchestratex."), name
            assert not name.startswith("_"), name


def test_exported_status_errors_are_orx_errors() -> None:
    exceptions = [
        member
        for member in (getattr(orchestratex, name) for name in orchestratex.__all__)
        if inspect.isclass(member) and issubclass(member, BaseException)
    ]
    assert len(exceptions) == 11
    for exc in exceptions:
        assert exc is orchestratex.ConfigError or issubclass(exc, orchestratex.OrxError), exc


def test_version_is_the_distribution_version() -> None:
    assert orchestratex.__version__ == importlib.metadata.version("orchestratex")


def test_importing_the_surface_and_stubs_loads_nothing_of_the_services() -> None:
    """In a fresh interpreter: the public surface and every stub, and none of the server-only modules."""
    code = (
        "import json, sys\n"
        "from orchestratex import *\n"
        "from orchestratex.v1 import analytics_pb2_grpc, orchestrator_pb2_grpc, providers_pb2_grpc, "
        "selector_pb2_grpc\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(SERVER_ONLY)!r}))))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(run.stdout) == []
