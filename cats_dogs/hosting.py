"""Who can reach a page: app.py's and review.py's --host, and review.py's --auth."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.1, ::1, localhost); 0.0.0.0 and a LAN address are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def parse_auth(value: str) -> tuple[str, str]:
    """--auth user:password as (user, password); the password may itself contain colons."""
    user, colon, password = value.partition(":")
    if not user or not colon or not password:
        raise ValueError(f"--auth {value!r}: expected user:password, both non-empty")
    return user, password
