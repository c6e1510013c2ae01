"""One way in: the reader of whichever layout a folder holds, and its check (``check-data``,
``convert-data``).

Above the readers (``fer_lib.data.affectnet``, ``ferplus``, ``ckplus``) and the shared conversion
code they use (``fer_lib.data.layouts``), so imports run one way: layouts <- readers <- this module
<- the command line.
"""

from __future__ import annotations

import os
from pathlib import Path

from fer_lib.data import affectnet, ckplus, ferplus, rafdb
from fer_lib.data.layouts import LAYOUT_NAMES, DataSetError, detect_layout

READERS = {
    "affectnet": affectnet.AffectNetCsv,
    "affectnet-npy": affectnet.AffectNetNpy,
    "ferplus": ferplus.FerPlus,
    "ckplus": ckplus.CkPlus,
}


def check_layout(
    path: str | os.PathLike, *, decode_images: bool = True, progress: bool = True, **options
) -> rafdb.CheckReport:
    """Check a copy of whichever layout ``path`` holds (``detect_layout``); ``options`` go to that
    layout's reader (``label_mode`` for FERPlus, ``classes`` 7 or 8, ``class_order`` for
    AffectNet's numpy release)."""
    try:
        layout = detect_layout(path)
    except DataSetError as error:
        return rafdb.CheckReport.failed(path, error.problems, layout="unknown")
    if layout == "rafdb":
        return rafdb.check_rafdb(path, decode_images=decode_images, progress=progress)
    if layout == "photos":
        problem = (
            f"{path}: a folder of photos (class folders), not yet in RAF-DB's layout. Turn it "
            f"into one with `python -m fer_lib import-images {path} OUT` (a face detector finds "
            "the faces), then check OUT"
        )
        return rafdb.CheckReport.failed(path, [problem], layout=LAYOUT_NAMES["photos"])
    reader = reader_for(layout, path, **options)
    return reader.check(decode_images=decode_images, progress=progress)


def reader_for(layout: str, path: str | os.PathLike, **options):
    """The reader object of a layout (``AffectNetCsv``, ``AffectNetNpy``,
    ``FerPlus``, ``CkPlus``)."""
    if layout not in READERS:
        raise DataSetError(
            [f"{path}: layout {layout!r} has no converter (known: {', '.join(READERS)})"]
        )
    return READERS[layout](Path(path), **options)
