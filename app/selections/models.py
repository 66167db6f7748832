"""Selections (the cart): an ordered list of dataset slugs, kept per browser session or saved by name."""

from datetime import datetime

from sqlalchemy import DateTime, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class Selection(Base):
    __tablename__ = "selection"

    # the owner key: unguessable, URL-safe; anonymous users hold it in a cookie, API clients in the URL. Only
    # its holder may change the selection.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # the read-only share id (links, exports): another random value, so sharing never hands out the owner key
    read_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(64))
    dataset_slugs: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
