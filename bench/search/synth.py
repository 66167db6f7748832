"""Synthetic catalogs with the real catalog's value distributions, in three shapes for the search benchmark.

Each synthetic dataset starts from a real normalised dataset chosen at random (so the joint distribution of
modality, anatomy, task, dim, host, access, labels and quality flags is the real one), then is perturbed:

- name: the template's name plus, for most rows, a suffix from a small pool ("Extended", "Cohort", ...); the
  slug gets the row number so it stays unique;
- year: the template's year moved by -2..+2 (clamped to 1990..2025); unknown stays unknown;
- images: log-normal around the template's count (sigma 0.6); unknown stays unknown, zero stays zero;
  the size bucket is recomputed from it;
- arrays: with probability 0.25 the anatomy (with its closure and diseases) comes from another real dataset
  that shares the template's first modality; with probability 0.2 the tasks do. This creates combinations the
  real catalog lacks while keeping every marginal close to the real one;
- search_document: recomputed with the importer's own `search_document`, so text search sees what it would
  see after a real import; raw_records are the template's source rows with the new name.

The real size is the real catalog itself, copied row for row.

Outputs, all built from one in-memory list so that every system answers over the same records:
- PostgreSQL database `bench_<n>` (Alembic schema, COPY load, GIN indexes rebuilt after the load, ANALYZE,
  `catalog_state.version` bumped so the search index is rebuilt);
- `records.json`: a JSON list of the normalised records (what the linear-scan baseline reads);
- `bench.db`: SQLite for Datasette, one `datasets` table with array columns stored as JSON text (so
  `_facet_array` and `__arraycontains` work), plus a contentless FTS5 table `datasets_fts` for `_search`.

Usage: python -m bench.search.synth --size 100000 [--seed 20261128] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.catalog.importer import search_document
from app.catalog.normalise import aliases_of, size_bucket, slugify

BENCH_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = BENCH_DIR / ".data"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SOURCE_URL = "postgresql://postgres@127.0.0.1:5432/imx_dev"
DEFAULT_SEED = 20261128
# bump when the generator changes, so cached data built by an older generator is rebuilt
SYNTH_VERSION = 1

NAME_SUFFIXES = [
    "", "", "", "", "Extended", "External", "Multi-Centre", "Cohort", "Challenge", "Subset", "Plus",
    "Paediatric", "Longitudinal", "Benchmark", "v2", "2.0",
]  # fmt: skip

COPY_COLUMNS = [
    "id", "slug", "name", "aliases", "url", "host", "section", "year", "dims", "modalities", "anatomies",
    "anatomy_closure", "tasks", "diseases", "labeled", "access", "licence", "organisation", "images",
    "size_bucket", "formats", "source", "quality_flags", "completeness", "variant_group", "raw_records",
    "search_document",
]  # fmt: skip
ARRAY_COLUMNS = {
    "aliases", "dims", "modalities", "anatomies", "anatomy_closure", "tasks", "diseases", "formats",
    "quality_flags",
}  # fmt: skip
JSON_COLUMNS = {"source", "raw_records"}
# what records.json (the linear-scan baseline) holds: the normalised facts, no raw source rows
JSON_FIELDS = [
    "id", "slug", "name", "aliases", "url", "host", "year", "dims", "modalities", "anatomies",
    "anatomy_closure", "tasks", "diseases", "labeled", "access", "licence", "images", "size_bucket",
    "quality_flags", "completeness", "search_document",
]  # fmt: skip
# what the SQLite table holds: the same facts as a search result row of our API (search_document lives in FTS)
SQLITE_FIELDS = [f for f in JSON_FIELDS if f not in ("search_document", "aliases")]
SQLITE_JSON_FIELDS = [
    "dims",
    "modalities",
    "anatomies",
    "anatomy_closure",
    "tasks",
    "diseases",
    "quality_flags",
]


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()[:16]


def size_label(n: int | None) -> str:
    return "real" if n is None else str(n)


def db_name(n: int) -> str:
    return f"bench_{n}"


def db_url(n: int) -> str:
    return db_url_named(db_name(n))


def db_url_named(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@dataclass
class DataPaths:
    label: str
    n: int
    dir: Path
    json_path: Path
    sqlite_path: Path
    meta_path: Path
    database_url: str


# -- reading the real catalog ---------------------------------------------------------------------------------
SOURCE_SNAPSHOT = DATA_DIR / "source.json"


def source_rows(source_url: str = SOURCE_URL, refresh: bool = False) -> list[dict[str, Any]]:
    """The real catalog every size is built from, snapshotted once in bench/.data/source.json.

    The dev database is re-imported by other people while they work; a snapshot keeps the real size and the
    synthetic sizes (and their JSON, SQLite and PostgreSQL copies) built from one and the same catalog.
    `refresh` takes a new snapshot (run.py --rebuild).
    """
    if SOURCE_SNAPSHOT.exists() and not refresh:
        return json.loads(SOURCE_SNAPSHOT.read_text())
    rows = json.loads(json.dumps(real_rows(source_url), default=str))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    SOURCE_SNAPSHOT.write_text(json.dumps(rows))
    return rows


def real_rows(source_url: str = SOURCE_URL) -> list[dict[str, Any]]:
    """The real normalised datasets; imported from the seed file into `bench_seed` if the source is empty."""
    try:
        rows = _read_rows(source_url)
    except psycopg.Error:
        rows = []
    if rows:
        return rows
    from app.catalog.service import import_catalog
    from app.core.db import new_session, run_migrations

    seed_url = "postgresql://postgres@127.0.0.1:5432/bench_seed"
    _create_database("bench_seed", drop=True)
    run_migrations(seed_url)
    with new_session(seed_url) as session:
        import_catalog(session)
    return _read_rows(seed_url)


def _read_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT {', '.join(COPY_COLUMNS)} FROM dataset ORDER BY id").fetchall()


# -- generating -------------------------------------------------------------------------------------------------
def synthesise(templates: list[dict[str, Any]], n: int, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """n synthetic records sampled from `templates` (see the module docstring for how)."""
    rng = random.Random(seed)
    by_modality: dict[str, list[int]] = {}
    for i, t in enumerate(templates):
        for m in t["modalities"][:1]:
            by_modality.setdefault(m, []).append(i)
    slug_cache: dict[str, tuple[str, list[str]]] = {}
    records = []
    for number in range(1, n + 1):
        t = templates[rng.randrange(len(templates))]
        r = dict(t)
        pool = by_modality.get(t["modalities"][0]) if t["modalities"] else None
        if pool and rng.random() < 0.25:
            donor = templates[rng.choice(pool)]
            r["anatomies"], r["anatomy_closure"], r["diseases"] = (
                donor["anatomies"], donor["anatomy_closure"], donor["diseases"]
            )  # fmt: skip
        if pool and rng.random() < 0.2:
            r["tasks"] = templates[rng.choice(pool)]["tasks"]
        if t["year"] is not None:
            r["year"] = min(2025, max(1990, t["year"] + rng.choice((-2, -1, 0, 0, 0, 1, 2))))
        if t["images"]:
            r["images"] = max(1, round(t["images"] * math.exp(rng.gauss(0.0, 0.6))))
        r["size_bucket"] = size_bucket(r["images"])
        suffix = rng.choice(NAME_SUFFIXES)
        name = f"{t['name']} {suffix}" if suffix else t["name"]
        if name not in slug_cache:
            slug_cache[name] = (slugify(name)[:140], aliases_of(name))
        base_slug, aliases = slug_cache[name]
        r.update(id=number, name=name, slug=f"{base_slug}-{number}", aliases=aliases, variant_group=None)
        flags = [f for f in t["quality_flags"] if f not in ("anatomy_unknown", "task_unknown")]
        flags += ["anatomy_unknown"] if not r["anatomies"] else []
        flags += ["task_unknown"] if not r["tasks"] else []
        r["quality_flags"] = flags
        r["raw_records"] = [{**raw, "name": name} for raw in t["raw_records"]]
        sections = t["section"].split("; ") if t["section"] else []
        r["search_document"] = search_document(r, sections)
        records.append(r)
    return records


# -- PostgreSQL -------------------------------------------------------------------------------------------------
def _create_database(name: str, drop: bool) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def database_stamp(url: str) -> dict[str, Any] | None:
    """The `bench` stamp written by `load_postgres`, or None when the database is missing or not ours."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT summary->'bench' FROM catalog_state WHERE id = 1").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def load_postgres(records: list[dict[str, Any]], n: int, stamp: dict[str, Any]) -> dict[str, float]:
    """A fresh `bench_<n>` with `records`; returns the seconds each step took."""

    from app.catalog.service import sync_vocabularies
    from app.core.db import new_session, run_migrations

    timings: dict[str, float] = {}
    started = time.perf_counter()
    _create_database(db_name(n), drop=True)
    url = db_url(n)
    run_migrations(url)
    with new_session(url) as session:
        sync_vocabularies(session)
        session.commit()
    timings["schema_s"] = time.perf_counter() - started

    with psycopg.connect(url) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        # a bulk load is faster into a table without its GIN indexes: drop them and rebuild them afterwards
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dataset' AND indexdef LIKE '%gin%'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY dataset ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            copy.set_types([_pg_type(c) for c in COPY_COLUMNS])
            for r in records:
                copy.write_row(
                    [Jsonb(r[c]) if c in JSON_COLUMNS and r[c] is not None else r[c] for c in COPY_COLUMNS]
                )
        timings["copy_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        timings["indexes_s"] = time.perf_counter() - started
        conn.execute("SELECT setval(pg_get_serial_sequence('dataset', 'id'), (SELECT max(id) FROM dataset))")
        # every bulk load bumps the catalog version: the search index is keyed on it. The bench stamp that
        # marks the database complete is written last, after every step below has succeeded.
        conn.execute(
            "INSERT INTO catalog_state (id, version, summary) VALUES (1, 1, %(s)s) "
            "ON CONFLICT (id) DO UPDATE SET version = catalog_state.version + 1, summary = %(s)s, "
            "updated_at = now()",
            {"s": Jsonb({"datasets": len(records)})},
        )
        conn.commit()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        timings["analyze_s"] = time.perf_counter() - started
        conn.execute(
            "UPDATE catalog_state SET summary = summary || %(s)s WHERE id = 1", {"s": Jsonb({"bench": stamp})}
        )
    return timings


_SCHEMA_SQL = """
SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'm', 'v')
UNION ALL
SELECT tablename, 'index', indexname, indexdef, true, '' FROM pg_indexes
WHERE schemaname = 'public' AND tablename = ANY(%(tables)s)
ORDER BY 1, 2, 3
"""
SEARCH_TABLES = ["dataset", "catalog_state", "vocabulary"]


def schema_digest(url: str) -> str | None:
    """A digest of the tables search reads (columns, generated expressions, indexes), None if unreachable."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            rows = conn.execute(_SCHEMA_SQL, {"tables": SEARCH_TABLES}).fetchall()
    except psycopg.Error:
        return None
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


_current_digest: str | None = None


def current_schema_digest() -> str:
    """What the migrations produce today, from a scratch database (they are sometimes edited in place)."""
    global _current_digest
    if _current_digest is None:
        from app.core.db import run_migrations

        _create_database("bench_schema_probe", drop=True)
        url = db_url_named("bench_schema_probe")
        run_migrations(url)
        _current_digest = schema_digest(url)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "bench_schema_probe" WITH (FORCE)')
    return _current_digest


def postgres_is_current(url: str, stamp: dict[str, Any]) -> bool:
    """The database holds these records (its stamp) under today's schema (new migrations applied first)."""
    from app.core.db import run_migrations

    if database_stamp(url) != stamp:
        return False
    try:
        run_migrations(url)  # a new migration (other tables) applies in place
    except Exception:
        return False
    return schema_digest(url) == current_schema_digest()


def _pg_type(column: str) -> str:
    if column in ARRAY_COLUMNS:
        return "text[]"
    return {
        "id": "int4", "year": "int4", "images": "int8", "labeled": "bool", "completeness": "float8",
        "source": "jsonb", "raw_records": "jsonb",
    }.get(column, "text")  # fmt: skip


# -- JSON and SQLite ---------------------------------------------------------------------------------------------
def write_json(records: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write("[\n")
        for i, r in enumerate(records):
            out.write(
                ("," if i else "") + json.dumps({f: r[f] for f in JSON_FIELDS}, ensure_ascii=False) + "\n"
            )
        out.write("]\n")
    tmp.replace(path)


def write_sqlite(records: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    columns = ", ".join(
        f"{f} INTEGER PRIMARY KEY" if f == "id" else f"{f} {_sqlite_type(f)}" for f in SQLITE_FIELDS
    )
    conn.execute(f"CREATE TABLE datasets ({columns})")
    placeholders = ", ".join("?" for _ in SQLITE_FIELDS)
    conn.executemany(
        f"INSERT INTO datasets ({', '.join(SQLITE_FIELDS)}) VALUES ({placeholders})",
        ([json.dumps(r[f]) if f in SQLITE_JSON_FIELDS else r[f] for f in SQLITE_FIELDS] for r in records),
    )
    # indexes on the single-valued columns, as a Datasette publisher would add (array columns cannot have one)
    for column in ("access", "host", "year", "images", "size_bucket", "labeled", "licence"):
        conn.execute(f"CREATE INDEX ix_datasets_{column} ON datasets ({column})")
    conn.execute("CREATE VIRTUAL TABLE datasets_fts USING fts5(search_document, content='')")
    conn.executemany(
        "INSERT INTO datasets_fts (rowid, search_document) VALUES (?, ?)",
        ((r["id"], r["search_document"]) for r in records),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    tmp.replace(path)


def _sqlite_type(field: str) -> str:
    if field in ("year", "images", "labeled"):
        return "INTEGER"
    if field == "completeness":
        return "REAL"
    return "TEXT"


# -- one entry point --------------------------------------------------------------------------------------------
def ensure_data(
    n: int | None, seed: int = DEFAULT_SEED, force: bool = False, source_url: str = SOURCE_URL, log=print
) -> tuple[DataPaths, dict[str, Any]]:
    """Build (or reuse from bench/.data and bench_<n>) the three copies of one catalog size.

    `n=None` is the real catalog. The files (JSON, SQLite) and the PostgreSQL database are checked apart:
    a schema change rebuilds only the database, from the same deterministic records (same snapshot, same
    seed). `force` takes a new snapshot of the real catalog and rebuilds everything. Returns the paths and
    the build facts (timings of the build steps that made them).
    """
    label = size_label(n)
    directory = DATA_DIR / label
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and not force else None
    templates = source_rows(source_url, refresh=force)
    count = len(templates) if n is None else n
    stamp = {
        "label": label,
        "n": count,
        "seed": None if n is None else seed,
        "synth_version": SYNTH_VERSION,
        "source_rows": rows_fingerprint(templates),
    }
    paths = _paths(label, count, directory)
    files_fresh = (
        meta is not None
        and meta["stamp"] == stamp
        and paths.json_path.exists()
        and paths.sqlite_path.exists()
    )
    db_fresh = files_fresh and postgres_is_current(paths.database_url, stamp)
    if files_fresh and db_fresh:
        log(f"[{label}] reusing cached data ({count:,} records, built {meta['built_at']})")
        return paths, {**meta, "cached": True}

    log(f"[{label}] building {'the PostgreSQL database (schema changed)' if files_fresh else 'everything'}")
    build: dict[str, float] = dict(meta["build_s"]) if files_fresh else {}
    started = time.perf_counter()
    records = templates if n is None else synthesise(templates, n, seed)
    build["generate_s"] = time.perf_counter() - started
    log(f"[{label}] {count:,} records generated in {build['generate_s']:.1f} s; loading PostgreSQL")
    build.update(load_postgres(records, count, stamp))
    log(f"[{label}] PostgreSQL loaded: { {k: round(v, 1) for k, v in build.items()} }")
    if not files_fresh:
        started = time.perf_counter()
        write_json(records, paths.json_path)
        build["json_s"] = time.perf_counter() - started
        started = time.perf_counter()
        write_sqlite(records, paths.sqlite_path)
        build["sqlite_s"] = time.perf_counter() - started
        log(f"[{label}] JSON {build['json_s']:.1f} s, SQLite {build['sqlite_s']:.1f} s")
    meta = {
        "n": count,
        "stamp": stamp,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "build_s": {k: round(v, 2) for k, v in build.items()},
        "json_bytes": paths.json_path.stat().st_size,
        "sqlite_bytes": paths.sqlite_path.stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return paths, {**meta, "cached": False}


def _paths(label: str, n: int, directory: Path) -> DataPaths:
    return DataPaths(
        label=label,
        n=n,
        dir=directory,
        json_path=directory / "records.json",
        sqlite_path=directory / "bench.db",
        meta_path=directory / "meta.json",
        database_url=db_url(n),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size", default="real", help="'real' or a number of datasets (100000, 1e6, 1m, 100k)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--source-url", default=SOURCE_URL, help="database holding the real catalog")
    args = parser.parse_args()
    paths, meta = ensure_data(parse_size(args.size), args.seed, args.force, args.source_url)
    print(json.dumps({"paths": {k: str(v) for k, v in paths.__dict__.items()}, "meta": meta}, indent=2))


def parse_size(text: str) -> int | None:
    text = text.strip().lower()
    if text == "real":
        return None
    multiplier = 1
    if text.endswith("k"):
        multiplier, text = 1_000, text[:-1]
    elif text.endswith("m"):
        multiplier, text = 1_000_000, text[:-1]
    return int(float(text) * multiplier)


if __name__ == "__main__":
    main()
