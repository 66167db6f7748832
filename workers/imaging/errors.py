"""Why an item could not be used: one exception type the fusion job catches, skips and reports."""

from __future__ import annotations

from pathlib import Path


class UnreadableItemError(Exception):
    """An item (file or DICOM series) that cannot go into a bundle.

    `code` is stable and short so the job's report can count skips by cause; `reason` is the sentence a user
    reads next to the file name.
    """

    def __init__(self, path: Path | str, code: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.code = code
        self.reason = reason


class SeriesRejectedError(UnreadableItemError):
    """A DICOM series that reads, but whose geometry would make a wrong volume (gap, mixed planes, localizer)."""


class LayoutNotRecognisedError(Exception):
    """`auto` found no known layout: the source needs an explicit layout (globs, pairing, label table)."""


class LabelGridMismatchError(UnreadableItemError):
    """A label on another grid (size, spacing, origin, direction) than its image: read, but refused while
    harmonising unless the request allows resampling it (BuildOptions.resample_mismatched_labels)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, "label_grid_mismatch", reason)
