"""Who can reach a page and what it keeps: app.py's and review.py's --host, review.py's --auth, and how long
uploaded and shown files stay."""

from __future__ import annotations

import ipaddress

# Both pages' uploads, heat maps, CSVs and shown photos are deleted from Gradio's cache after an hour.
KEEP_FILES_S = 3600


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.1, ::1, localhost); 0.0.0.0 and a LAN address are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def open_page_warnings(host: str, port: int, share: bool) -> list[str]:
    """app.py's warnings for a page others can reach: it has no login, and it writes nothing, so a warning, not a
    refusal (review.py, which writes decisions, asks for --auth instead)."""
    warnings = []
    if not is_loopback(host):
        warnings.append(f"warning: --host {host}: anyone who can reach this machine on port {port} can use the page "
                        "(it has no login)")
    if share:  # Gradio's public link reaches the page from the whole internet, for up to a week
        warnings.append("warning: --share: anyone with the public link can use the page, and every photo sent to it "
                        "is classified on this machine (it has no login); stop the page (Ctrl+C) to end the link")
    return warnings


def parse_auth(value: str) -> tuple[str, str]:
    """--auth user:password as (user, password); the password may itself contain colons."""
    user, colon, password = value.partition(":")
    if not user or not colon or not password:
        raise ValueError(f"--auth {value!r}: expected user:password, both non-empty")
    return user, password
