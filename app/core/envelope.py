"""The one success envelope: every JSON object a route answers with on success carries `"ok": true`, as every
error carries `"ok": false` (app/core/errors.py). A client can tell the two apart without reading the status.

Lists are objects too (`{ok, count, results}` for bundles, `{ok, facets}` for a search's facets), never bare
arrays, so that every success answer can say so and gain fields later without breaking its clients.
"""

from typing import Literal

from pydantic import BaseModel, Field


class Ok(BaseModel):
    """Base of every JSON object answered on success."""

    ok: Literal[True] = Field(
        default=True, description="Always true on success (false in the error envelope)"
    )


__all__ = ["Ok"]
