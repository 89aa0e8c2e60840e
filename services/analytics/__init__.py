"""AnalyticsService: turns orchestration events into performance, cost, accuracy and satisfaction reports.

Modules: ``ingest`` (events to storable facts), ``requests`` (request validation), ``reports`` (pure
report functions), ``server`` (the servicer and ``build``). Storage: the ``AnalyticsStore`` interface in
``orchestratex.store.analytics_model``, implemented by ``orchestratex.store.analytics`` (SQLite) and
``orchestratex.store.mongo_analytics``.
"""
