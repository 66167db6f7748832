"""What every HTML form of the portal shares: same-site posts only, bounded bodies, and visitor cookies.

Anonymous visitors are recognised by random cookies (their selection, their bundles). SameSite=Lax keeps those
cookies off another site's form posts, but the answer to such a post could still set a new cookie and so swap
the visitor's selection or bundles for empty ones: posts that browsers mark cross-site are refused.
"""

from urllib.parse import parse_qsl

from fastapi import Request, Response

from app.core.errors import ApiError, InvalidInput

VISITOR_COOKIE_MAX_AGE = 400 * 24 * 3600  # browsers cap a cookie's lifetime at 400 days


def refuse_cross_site(request: Request) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise ApiError(403, "this form can only be sent from this site's pages")


async def same_site_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The fields of a urlencoded form post from this site, in order, repeated keys kept."""
    refuse_cross_site(request)
    body = await request.body()
    if len(body) > max_bytes:
        raise InvalidInput(["body"], "form too large")
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


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
