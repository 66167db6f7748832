"""What every HTML form of the portal shares: same-site posts only, bounded bodies, and visitor cookies.

Anonymous visitors are recognised by random cookies (their selection, their bundles). SameSite=Lax keeps those
cookies off another site's form posts, but the answer to such a post could still set a new cookie and so swap
the visitor's selection or bundles for empty ones: posts that browsers mark cross-site are refused.
"""

from urllib.parse import parse_qsl

from fastapi import Request, Response

from app.core.errors import ApiError

VISITOR_COOKIE_MAX_AGE = 400 * 24 * 3600  # browsers cap a cookie's lifetime at 400 days


def refuse_cross_site(request: Request) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise ApiError(403, "this form can only be sent from this site's pages")


async def same_site_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The fields of a urlencoded form post from this site, in order, repeated keys kept. A body over this
    form's `max_bytes` is a 413, raised at the first chunk past it (every form body is also within
    IMAGINGX_MAX_FORM_BODY_BYTES before the route runs: app/core/limits.py)."""
    refuse_cross_site(request)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(
                413, f"form too large: at most {max_bytes} bytes", [{"loc": ["body"], "msg": "too large"}]
            )
        chunks.append(chunk)
    return parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True)


def set_visitor_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A long-lived, script-invisible cookie naming something of this visitor's (a selection, bundles)."""
    response.set_cookie(
        name,
        value,
        max_age=VISITOR_COOKIE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
