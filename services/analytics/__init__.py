"""AnalyticsService: turns orchestration events into performance, cost, accuracy and satisfaction reports.

Modules: ``ingest`` (events to storable facts), ``requests`` (request validation), ``reports`` (pure
report functions), ``server`` (the servicer and ``build``). Storage is ``orchestratex.store.analytics``.
"""
