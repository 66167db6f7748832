"""The units of a bundle job, each run by one Celery task: fetch one source, harmonise one item, package.

Every unit is idempotent and publishes by rename: it first checks in PostgreSQL whether its work is still to
do, writes its files under temporary names, renames them into place, and only then records itself done. A unit
killed at any point therefore leaves either nothing or a finished file that the rerun finds (or rewrites with
the same bytes), and the job's outcome does not depend on which worker ran what, or how often.

Layout of a job's work folder (`<home>/jobs/<job id>/`, removed when the job ends):
    downloads/<slug>/...   the source's files, hard links into the shared download cache
    sources/<slug>/        the source ready for layout detection (archives unpacked safely)
    cases/<item>.*.nii.gz  one harmonised 3D item, compressed by its unit, or its source file (a hard link, or a
                           copy of a local source's file) when already in the bundle's form (plain.py);
                           packaging links it into the bundle
    cases/<item>.npz       one harmonised 2D item's arrays (packaging writes the PNG)
"""

from workers.pipeline.common import channel_names
from workers.pipeline.fetch import explicit_layout, fetch_source, item_id_for, prepare_source_root
from workers.pipeline.harmonise import harmonise_item, harmonise_to_file
from workers.pipeline.package import clean_work, load_harmonised, package

__all__ = [
    "channel_names",
    "clean_work",
    "explicit_layout",
    "fetch_source",
    "harmonise_item",
    "harmonise_to_file",
    "item_id_for",
    "load_harmonised",
    "package",
    "prepare_source_root",
]
