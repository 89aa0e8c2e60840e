"""ProviderService: the only service that talks to LLM vendors (simulated models by default).

Public surface:

* ``server.build(settings, listen=None, *, backend=None, resilience=None, tracer=None)`` -> a not-yet-started
  ``GrpcServer``.
* ``catalogue``: ``load_catalogue(settings)``, ``Catalogue.get/ids``, ``ModelSpec``, ``cost_usd``, ``to_proto``.
* ``backend``: the ``Backend`` protocol and its request/event types (implemented by ``Simulator``).
* ``simulator``: ``Simulator`` (``quality_of(draft_id)``, ``draft(draft_id)``), ``DRAFT_LABEL``, ``DRAFT_ID_RE``.
* ``models_sync``: ``orchestratex models sync``, the catalogue's prices and limits refreshed from OpenRouter.
* ``metrics``: the ``orx_provider_*`` Prometheus metrics (a table of them); ``telemetry``: the spans
  ``providers.generate`` / ``providers.attempt`` and their attributes.
"""
