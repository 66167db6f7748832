from alembic import context
from sqlalchemy import engine_from_config, pool

from app.bundles import models as _bundle_models  # noqa: F401
from app.catalog import models as _catalog_models  # noqa: F401  (registers tables on Base.metadata)
from app.core.db import Base
from app.mdfp import models as _mdfp_models  # noqa: F401
from app.selections import models as _selection_models  # noqa: F401

target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Autogenerate leaves alone tables that migrations create by hand (none today; kept for the next one)."""
    return not (type_ == "table" and reflected and compare_to is None)


def run_migrations_online() -> None:
    config = context.config
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_object=include_object
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
