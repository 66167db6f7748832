from alembic import context
from sqlalchemy import engine_from_config, pool

from app.catalog import models as _catalog_models  # noqa: F401  (registers tables on Base.metadata)
from app.core.db import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    config = context.config
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
