"""The SQLite analytics schema: its migrations, frozen.

``MIGRATIONS[i]`` brings a database from ``PRAGMA user_version`` i to i+1 (``SqliteDatabase.open`` runs the
missing ones in order, each in its own transaction). A migration that has run on someone's database can
never change, so each is **literal SQL**, never built from live constants (``FAILURE_KINDS``, histogram
sizes...): a changed constant must not rewrite a migration that has already run. Versions 1-3 are the exact
text the releases before this module generated (long lines are split into adjacent string literals, which
Python joins back). ``tests/analytics/test_migrations.py`` pins the SHA-256 of every migration and fails when
one changes. A schema change is a **new** migration appended here, which converts the existing data; a
change of what the counters count is a bump of ``COUNTERS_VERSION`` (``services.analytics.store.counters``),
which rebuilds them from the raw facts at start-up.

The counter columns created by version 2 are the storage names of ``services.analytics.store.counters``
(``MODEL_COLUMNS``, ``SESSION_COLUMNS``, ``DAY_COLUMNS``); the test checks that they still match.
"""

from __future__ import annotations

#: Version 1: raw facts (sessions, the events ledger, calls, critiques, ratings).
V1 = """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status INTEGER NOT NULL,
        create_time_ns INTEGER NOT NULL,
        started INTEGER NOT NULL DEFAULT 0,
        primary_model TEXT NOT NULL DEFAULT '',
        primary_domain INTEGER NOT NULL DEFAULT 0,
        end_time_ns INTEGER,
        final_score REAL,
        best_model TEXT NOT NULL DEFAULT '',
        calls INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_time ON sessions (create_time_ns);
    CREATE INDEX sessions_by_tenant_time ON sessions (tenant, create_time_ns);
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        kind TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE calls (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        model TEXT NOT NULL,
        purpose INTEGER NOT NULL,
        shadow INTEGER NOT NULL,
        round INTEGER NOT NULL,
        success INTEGER NOT NULL,
        failure_kind INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        latency_ns INTEGER NOT NULL,
        ttft_ns INTEGER,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE critiques (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        round INTEGER NOT NULL,
        critic_model TEXT NOT NULL,
        author_model TEXT NOT NULL,
        score REAL NOT NULL,
        shadow INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE session_models (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        model TEXT NOT NULL,
        calls INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        PRIMARY KEY (session_id, model)
    ) WITHOUT ROWID;
    CREATE TABLE feedback (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        user_id TEXT NOT NULL,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, user_id)
    ) WITHOUT ROWID
    """

#: Version 2: pre-aggregated counters at every block level of ``buckets.LEVELS`` (their columns named as in
#: ``counters``); the new columns are filled and the counters built from the raw facts at the next start-up
#: (``meta.counters`` is not ``COUNTERS_VERSION``).
V2 = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    ALTER TABLE sessions ADD COLUMN shadow_state INTEGER;
    ALTER TABLE calls ADD COLUMN lat_bucket INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN ttft_bucket INTEGER;
    ALTER TABLE critiques ADD COLUMN score_milli INTEGER NOT NULL DEFAULT 0;
    DROP TABLE session_models;
    CREATE TABLE model_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        domain INTEGER NOT NULL,
"""
    "        attempts INTEGER NOT NULL DEFAULT 0, successes INTEGER NOT NULL DEFAULT 0, "
    "fail_0 INTEGER NOT NULL DEFAULT 0, fail_1 INTEGER NOT NULL DEFAULT 0, "
    "fail_2 INTEGER NOT NULL DEFAULT 0, fail_3 INTEGER NOT NULL DEFAULT 0, "
    "fail_4 INTEGER NOT NULL DEFAULT 0, fail_5 INTEGER NOT NULL DEFAULT 0, "
    "fail_6 INTEGER NOT NULL DEFAULT 0, fail_7 INTEGER NOT NULL DEFAULT 0, "
    "fail_8 INTEGER NOT NULL DEFAULT 0, fail_9 INTEGER NOT NULL DEFAULT 0, "
    "prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, "
    "reasoning_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, "
    "total_tokens INTEGER NOT NULL DEFAULT 0, cost_nanos INTEGER NOT NULL DEFAULT 0, "
    "lat_0 INTEGER NOT NULL DEFAULT 0, lat_1 INTEGER NOT NULL DEFAULT 0, "
    "lat_2 INTEGER NOT NULL DEFAULT 0, lat_3 INTEGER NOT NULL DEFAULT 0, "
    "lat_4 INTEGER NOT NULL DEFAULT 0, lat_5 INTEGER NOT NULL DEFAULT 0, "
    "lat_6 INTEGER NOT NULL DEFAULT 0, lat_7 INTEGER NOT NULL DEFAULT 0, "
    "lat_8 INTEGER NOT NULL DEFAULT 0, lat_9 INTEGER NOT NULL DEFAULT 0, "
    "lat_10 INTEGER NOT NULL DEFAULT 0, lat_11 INTEGER NOT NULL DEFAULT 0, "
    "lat_12 INTEGER NOT NULL DEFAULT 0, lat_13 INTEGER NOT NULL DEFAULT 0, "
    "lat_14 INTEGER NOT NULL DEFAULT 0, lat_15 INTEGER NOT NULL DEFAULT 0, "
    "lat_16 INTEGER NOT NULL DEFAULT 0, lat_17 INTEGER NOT NULL DEFAULT 0, "
    "lat_18 INTEGER NOT NULL DEFAULT 0, lat_19 INTEGER NOT NULL DEFAULT 0, "
    "lat_20 INTEGER NOT NULL DEFAULT 0, lat_21 INTEGER NOT NULL DEFAULT 0, "
    "lat_22 INTEGER NOT NULL DEFAULT 0, lat_23 INTEGER NOT NULL DEFAULT 0, "
    "lat_24 INTEGER NOT NULL DEFAULT 0, lat_25 INTEGER NOT NULL DEFAULT 0, "
    "lat_26 INTEGER NOT NULL DEFAULT 0, lat_27 INTEGER NOT NULL DEFAULT 0, "
    "lat_28 INTEGER NOT NULL DEFAULT 0, lat_29 INTEGER NOT NULL DEFAULT 0, "
    "lat_30 INTEGER NOT NULL DEFAULT 0, lat_31 INTEGER NOT NULL DEFAULT 0, "
    "lat_32 INTEGER NOT NULL DEFAULT 0, lat_33 INTEGER NOT NULL DEFAULT 0, "
    "lat_34 INTEGER NOT NULL DEFAULT 0, lat_35 INTEGER NOT NULL DEFAULT 0, "
    "lat_36 INTEGER NOT NULL DEFAULT 0, lat_37 INTEGER NOT NULL DEFAULT 0, "
    "lat_38 INTEGER NOT NULL DEFAULT 0, lat_39 INTEGER NOT NULL DEFAULT 0, "
    "lat_40 INTEGER NOT NULL DEFAULT 0, lat_41 INTEGER NOT NULL DEFAULT 0, "
    "lat_42 INTEGER NOT NULL DEFAULT 0, lat_43 INTEGER NOT NULL DEFAULT 0, "
    "lat_44 INTEGER NOT NULL DEFAULT 0, lat_45 INTEGER NOT NULL DEFAULT 0, "
    "lat_46 INTEGER NOT NULL DEFAULT 0, lat_47 INTEGER NOT NULL DEFAULT 0, "
    "lat_48 INTEGER NOT NULL DEFAULT 0, lat_49 INTEGER NOT NULL DEFAULT 0, "
    "lat_50 INTEGER NOT NULL DEFAULT 0, lat_51 INTEGER NOT NULL DEFAULT 0, "
    "lat_52 INTEGER NOT NULL DEFAULT 0, lat_53 INTEGER NOT NULL DEFAULT 0, "
    "lat_54 INTEGER NOT NULL DEFAULT 0, lat_55 INTEGER NOT NULL DEFAULT 0, "
    "lat_56 INTEGER NOT NULL DEFAULT 0, lat_57 INTEGER NOT NULL DEFAULT 0, "
    "lat_58 INTEGER NOT NULL DEFAULT 0, lat_59 INTEGER NOT NULL DEFAULT 0, "
    "lat_60 INTEGER NOT NULL DEFAULT 0, lat_61 INTEGER NOT NULL DEFAULT 0, "
    "lat_62 INTEGER NOT NULL DEFAULT 0, lat_63 INTEGER NOT NULL DEFAULT 0, "
    "ttft_0 INTEGER NOT NULL DEFAULT 0, ttft_1 INTEGER NOT NULL DEFAULT 0, "
    "ttft_2 INTEGER NOT NULL DEFAULT 0, ttft_3 INTEGER NOT NULL DEFAULT 0, "
    "ttft_4 INTEGER NOT NULL DEFAULT 0, ttft_5 INTEGER NOT NULL DEFAULT 0, "
    "ttft_6 INTEGER NOT NULL DEFAULT 0, ttft_7 INTEGER NOT NULL DEFAULT 0, "
    "ttft_8 INTEGER NOT NULL DEFAULT 0, ttft_9 INTEGER NOT NULL DEFAULT 0, "
    "ttft_10 INTEGER NOT NULL DEFAULT 0, ttft_11 INTEGER NOT NULL DEFAULT 0, "
    "ttft_12 INTEGER NOT NULL DEFAULT 0, ttft_13 INTEGER NOT NULL DEFAULT 0, "
    "ttft_14 INTEGER NOT NULL DEFAULT 0, ttft_15 INTEGER NOT NULL DEFAULT 0, "
    "ttft_16 INTEGER NOT NULL DEFAULT 0, ttft_17 INTEGER NOT NULL DEFAULT 0, "
    "ttft_18 INTEGER NOT NULL DEFAULT 0, ttft_19 INTEGER NOT NULL DEFAULT 0, "
    "ttft_20 INTEGER NOT NULL DEFAULT 0, ttft_21 INTEGER NOT NULL DEFAULT 0, "
    "ttft_22 INTEGER NOT NULL DEFAULT 0, ttft_23 INTEGER NOT NULL DEFAULT 0, "
    "ttft_24 INTEGER NOT NULL DEFAULT 0, ttft_25 INTEGER NOT NULL DEFAULT 0, "
    "ttft_26 INTEGER NOT NULL DEFAULT 0, ttft_27 INTEGER NOT NULL DEFAULT 0, "
    "ttft_28 INTEGER NOT NULL DEFAULT 0, ttft_29 INTEGER NOT NULL DEFAULT 0, "
    "ttft_30 INTEGER NOT NULL DEFAULT 0, ttft_31 INTEGER NOT NULL DEFAULT 0, "
    "ttft_32 INTEGER NOT NULL DEFAULT 0, ttft_33 INTEGER NOT NULL DEFAULT 0, "
    "ttft_34 INTEGER NOT NULL DEFAULT 0, ttft_35 INTEGER NOT NULL DEFAULT 0, "
    "ttft_36 INTEGER NOT NULL DEFAULT 0, ttft_37 INTEGER NOT NULL DEFAULT 0, "
    "ttft_38 INTEGER NOT NULL DEFAULT 0, ttft_39 INTEGER NOT NULL DEFAULT 0, "
    "ttft_40 INTEGER NOT NULL DEFAULT 0, ttft_41 INTEGER NOT NULL DEFAULT 0, "
    "ttft_42 INTEGER NOT NULL DEFAULT 0, ttft_43 INTEGER NOT NULL DEFAULT 0, "
    "ttft_44 INTEGER NOT NULL DEFAULT 0, ttft_45 INTEGER NOT NULL DEFAULT 0, "
    "ttft_46 INTEGER NOT NULL DEFAULT 0, ttft_47 INTEGER NOT NULL DEFAULT 0, "
    "ttft_48 INTEGER NOT NULL DEFAULT 0, ttft_49 INTEGER NOT NULL DEFAULT 0, "
    "ttft_50 INTEGER NOT NULL DEFAULT 0, ttft_51 INTEGER NOT NULL DEFAULT 0, "
    "ttft_52 INTEGER NOT NULL DEFAULT 0, ttft_53 INTEGER NOT NULL DEFAULT 0, "
    "ttft_54 INTEGER NOT NULL DEFAULT 0, ttft_55 INTEGER NOT NULL DEFAULT 0, "
    "ttft_56 INTEGER NOT NULL DEFAULT 0, ttft_57 INTEGER NOT NULL DEFAULT 0, "
    "ttft_58 INTEGER NOT NULL DEFAULT 0, ttft_59 INTEGER NOT NULL DEFAULT 0, "
    "ttft_60 INTEGER NOT NULL DEFAULT 0, ttft_61 INTEGER NOT NULL DEFAULT 0, "
    "ttft_62 INTEGER NOT NULL DEFAULT 0, ttft_63 INTEGER NOT NULL DEFAULT 0, "
    "recv_n INTEGER NOT NULL DEFAULT 0, recv_milli INTEGER NOT NULL DEFAULT 0, "
    "given_n INTEGER NOT NULL DEFAULT 0, given_milli INTEGER NOT NULL DEFAULT 0,\n"
    """        PRIMARY KEY (level, unit, tenant, model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE session_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        primary_model TEXT NOT NULL,
        domain INTEGER NOT NULL,
"""
    "        shadow_n INTEGER NOT NULL DEFAULT 0, shadow_hits INTEGER NOT NULL DEFAULT 0, "
    "fb_n INTEGER NOT NULL DEFAULT 0, fb_hits INTEGER NOT NULL DEFAULT 0, "
    "r_1 INTEGER NOT NULL DEFAULT 0, r_2 INTEGER NOT NULL DEFAULT 0, r_3 INTEGER NOT NULL DEFAULT 0, "
    "r_4 INTEGER NOT NULL DEFAULT 0, r_5 INTEGER NOT NULL DEFAULT 0,\n"
    """        PRIMARY KEY (level, unit, tenant, primary_model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE day_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
"""
    "        calls INTEGER NOT NULL DEFAULT 0, cost_nanos INTEGER NOT NULL DEFAULT 0, "
    "r_1 INTEGER NOT NULL DEFAULT 0, r_2 INTEGER NOT NULL DEFAULT 0, r_3 INTEGER NOT NULL DEFAULT 0, "
    "r_4 INTEGER NOT NULL DEFAULT 0, r_5 INTEGER NOT NULL DEFAULT 0,\n"
    """        PRIMARY KEY (level, unit, tenant)
    ) WITHOUT ROWID;
    DROP INDEX sessions_by_time;
    CREATE INDEX sessions_by_time_cost ON sessions (create_time_ns, cost_nanos, session_id, calls);
"""
    "    CREATE INDEX sessions_by_tenant_cost ON sessions (tenant, create_time_ns, cost_nanos, "
    "session_id, calls)\n    "
)

#: Version 3: ratings given before their session is known, with the caller's tenant; joined (moved to
#: ``feedback``) by the batch that creates the session.
V3 = """
    CREATE TABLE pending_feedback (
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, user_id)
    ) WITHOUT ROWID
    """

#: Every migration, in order: ``MIGRATIONS[i]`` brings the schema to version i+1. Append only.
MIGRATIONS: tuple[str, ...] = (V1, V2, V3)
