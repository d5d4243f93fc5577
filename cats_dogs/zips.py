"""Zip archives from users (prepare_data.py --from x.zip, the page's many-photos upload): each member's real name,
and the members that are refused one by one, with their reason, instead of ending the whole import."""

from __future__ import annotations

import zipfile

from cats_dogs.csv_rows import is_inside
from cats_dogs.images import zip_member_name

# Methods zipfile can unpack here. Windows' "compressed folder" uses deflate64 for files over 2 GB, which it cannot.
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What reading a member can still raise after member_problem passed it: a bad CRC, a damaged stream.
MEMBER_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError, ValueError)


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this member is not unpacked, or None when it can be read."""
    name = zip_member_name(info)
    if not is_inside(name):  # absolute, a drive, or climbing out with ..
        return "a path outside the archive's folder (absolute or with ..), not unpacked"
    if info.flag_bits & 0x1:
        return "encrypted (password-protected), not unpacked"
    if info.compress_type not in READABLE_METHODS:
        method = "deflate64" if info.compress_type == 9 else f"method {info.compress_type}"
        return f"compressed with {method}, which Python cannot unpack: re-zip it with 7-Zip or as a plain zip"
    return None


def read_problem(error: Exception) -> str:
    """Plain words for a member that failed while being read (its bytes are damaged)."""
    return f"damaged inside the archive ({error})"
