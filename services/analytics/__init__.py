"""AnalyticsService: turns orchestration events into performance, cost, accuracy and satisfaction reports.

Modules: ``ingest`` (events to storable facts), ``requests`` (request validation), ``reports`` (pure
report functions), ``server`` (the servicer and ``build``). Storage: the ``AnalyticsStore`` interface in
``services.analytics.store.model``, implemented by ``services.analytics.store.sqlite`` (SQLite) and
``services.analytics.store.mongo``.
"""
