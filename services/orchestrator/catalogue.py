"""The providers' model catalogue as the orchestrator sees it.

:class:`CatalogueCache` fetches it lazily from the providers service and keeps it for
:data:`CATALOGUE_TTL` seconds (the last known one when providers cannot be reached); :class:`Pricing`
answers a session's questions about a model from it: prices (to estimate a call cut short), output
limits, structured-output support and family.
"""

from __future__ import annotations

import logging
import time

import grpc

from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc

log = logging.getLogger(__name__)

CATALOGUE_TTL = 30.0


class CatalogueCache:
    """The providers' catalogue, fetched lazily and kept for a while (for pricing and fallbacks)."""

    def __init__(self, providers: providers_pb2_grpc.ProviderServiceStub) -> None:
        self.providers = providers
        self.models: dict[str, common_pb2.ModelInfo] = {}
        self.simulated = False
        self._fetched = 0.0

    async def get(self) -> dict[str, common_pb2.ModelInfo]:
        """The catalogue; the last known one when providers cannot be reached."""
        if time.monotonic() - self._fetched > CATALOGUE_TTL or not self.models:
            try:
                resp = await self.providers.ListModels(
                    providers_pb2.ListModelsRequest(include_unavailable=True), timeout=5
                )
            except grpc.aio.AioRpcError as err:
                log.warning("cannot list models: %s", err.code().name)
                return self.models
            self.models = {m.id: m for m in resp.models}
            self.simulated = resp.simulated
            self._fetched = time.monotonic()
        return self.models


class Pricing:
    """Catalogue prices and limits, for estimates when a call was cut short."""

    def __init__(self, models: dict[str, common_pb2.ModelInfo]) -> None:
        self.models = models

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What the tokens cost at the model's catalogue prices (0 for a model not in the catalogue)."""
        info = self.models.get(model)
        if info is None:
            return 0.0
        return round(
            (prompt_tokens * info.input_price_per_mtok + completion_tokens * info.output_price_per_mtok) / 1e6, 9
        )

    def max_tokens(self, model: str, wanted: int) -> int:
        """``wanted``, capped at the model's output limit when it has one."""
        info = self.models.get(model)
        if info is None or info.max_output_tokens <= 0:
            return wanted
        return int(min(wanted, info.max_output_tokens))

    def json_mode(self, model: str) -> bool:
        """Whether the model offers JSON mode."""
        info = self.models.get(model)
        return bool(info and info.supports_json_mode)

    def structured_outputs(self, model: str) -> bool:
        """Whether the model follows a JSON Schema (structured outputs)."""
        info = self.models.get(model)
        return bool(info and info.supports_structured_outputs)

    def family(self, model: str) -> str:
        """The model's family ("" when unknown)."""
        info = self.models.get(model)
        return info.family if info else ""
