"""The one success envelope: every JSON object a route answers with on success carries `"ok": true`, as every
error carries `"ok": false` (app/core/errors.py). A client can tell the two apart without reading the status.

Lists (`GET /api/v1/facets`, `GET /api/v1/bundles`) are answered as bare JSON arrays, as they always were:
wrapping them would break their clients.
"""

from typing import Literal

from pydantic import BaseModel, Field


class Ok(BaseModel):
    """Base of every JSON object answered on success."""

    ok: Literal[True] = Field(
        default=True, description="Always true on success (false in the error envelope)"
    )


__all__ = ["Ok"]
