"""Storage: one interface per service's data, an embedded SQLite implementation (WAL, one writer,
batched transactions) and a MongoDB implementation through PyMongo's async API."""
