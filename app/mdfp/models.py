"""Saved MDFP plans: a spec, the four phases computed from it, and the catalog version they were computed on."""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class Plan(Base):
    __tablename__ = "plan"

    # unguessable, URL-safe: a plan's URL is how it is shared
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    phases: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    summary: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    catalog_version: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
