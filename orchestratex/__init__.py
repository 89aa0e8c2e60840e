"""OrchestrateX: several LLMs, one excellent answer.

The importable package shared by every service: generated stubs (``orchestratex.v1``), settings,
logging, errors, the gRPC server bootstrap and the storage layer.
"""

__version__ = "0.1.0"
