"""Database engine, sessions and migrations. The schema is created only by Alembic."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.core.config import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class Base(DeclarativeBase):
    pass


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as docker-compose and libpq users write them) and use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set (imagingx serve sets it after starting PostgreSQL)")
    settings = get_settings()
    # A web process runs at most web_concurrency requests at once (app/core/admission.py); a request may hold
    # two connections (its session, and the page header's selection lookup), so the pool never makes a running
    # request wait. If it ever is exhausted, waiting 5 s then answering 503 beats the default 30 s stall.
    # No ping before each checkout (a round trip per request): when PostgreSQL restarts, the first query that
    # meets a dead connection fails (503) and SQLAlchemy then discards every connection made before it.
    return create_engine(
        normalise_url(url),
        pool_size=settings.web_concurrency,
        max_overflow=settings.web_concurrency,
        pool_timeout=5,
        connect_args={"options": f"-c statement_timeout={settings.query_timeout_ms}"},
    )


@lru_cache
def _session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


# While set (tests only, through `sessions_inside`), every session joins this connection's open transaction.
_outer_connection: Connection | None = None


def new_session(url: str | None = None) -> Session:
    """A session on the configured database (or `url`): every database access of the portal starts here."""
    if _outer_connection is not None and url is None:
        # A commit becomes the release of a savepoint and a rollback a rollback to it: the code under test
        # behaves as in production, yet nothing outlives the outer transaction.
        return Session(
            bind=_outer_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    return _session_factory(url)()


@contextmanager
def sessions_inside(connection: Connection) -> Iterator[None]:
    """Make every `new_session()` meanwhile work inside `connection`'s transaction, which the caller undoes.

    For tests: they run whole requests, services that commit and all, then roll the transaction back so that
    the next test finds the database as the session's fixtures left it. One connection serves every session,
    so the code under test must use it from one thread at a time (a TestClient request does; a live server
    with concurrent requests, or another process such as a Celery worker, cannot see the transaction at all).
    """
    global _outer_connection
    if _outer_connection is not None:
        raise RuntimeError("sessions are already bound to an outer transaction")
    _outer_connection = connection
    try:
        yield
    finally:
        _outer_connection = None


@contextmanager
def undone_transaction() -> Iterator[None]:
    """Everything done meanwhile through `new_session()` (commits included) inside one transaction that is
    rolled back at the end, whatever happens; then every answer this process derived from the catalog is
    forgotten, since the catalog's version numbers repeat after a rollback (what tests run inside)."""
    from app.core.cache import forget_derived_state

    forget_derived_state()
    with get_engine().connect() as connection:
        transaction = connection.begin()
        try:
            with sessions_inside(connection):
                yield
        finally:
            transaction.rollback()
            forget_derived_state()


def get_session() -> Iterator[Session]:
    """FastAPI dependency: one session per request."""
    with new_session() as session:
        yield session


def run_migrations(url: str | None = None) -> None:
    """Upgrade the database to the newest migration (what `imagingx db upgrade` runs)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url or get_settings().database_url or ""))
    command.upgrade(config, "head")
