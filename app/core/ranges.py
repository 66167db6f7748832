"""One byte range of a download (RFC 9110, section 14), for bodies streamed rather than read from one file.

Only a single range is served. Several ranges, a malformed header or an `If-Range` naming another version
get the whole body with 200, which the RFC allows and every download tool handles; a range that starts past
the end is 416.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    pass


def requested_range(
    range_header: str | None, if_range: str | None, etag: str, size: int
) -> tuple[int, int] | None:
    """(start, end) with `end` exclusive for the one range asked for, or None for the whole body."""
    if not range_header or (if_range is not None and if_range.strip() != etag):
        return None
    match = _SINGLE_RANGE.fullmatch(range_header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # "bytes=-N": the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable
        return max(size - suffix, 0), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # an invalid range: the header is ignored
    if start >= size:
        raise RangeNotSatisfiable
    return start, size if last == "" else min(int(last) + 1, size)


def attachment(filename: str) -> str:
    """A Content-Disposition for `filename`, with the RFC 5987 form when it is not plain ASCII."""
    quoted = quote(filename)
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"
