"""selections: a read-only share id beside the owner key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A selection's id is its owner key (the visitor's cookie); read_id is the link it is shared and exported
    # under, which lets one read but not change it. Existing selections get one of their own.
    op.add_column("selection", sa.Column("read_id", sa.String(32), nullable=True))
    connection = op.get_bind()
    ids = connection.execute(sa.text("SELECT id FROM selection")).scalars().all()
    for selection_id in ids:
        connection.execute(
            sa.text("UPDATE selection SET read_id = :read_id WHERE id = :id"),
            {"read_id": secrets.token_urlsafe(24), "id": selection_id},
        )
    op.alter_column("selection", "read_id", nullable=False)
    op.create_index("ix_selection_read_id", "selection", ["read_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_selection_read_id", table_name="selection")
    op.drop_column("selection", "read_id")
