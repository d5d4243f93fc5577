"""Who can reach a page and what it keeps: app.py's and review.py's --host, review.py's --auth, how long
uploaded and shown files stay, and how many requests and sessions a page holds (docs/app.md, "Many visitors")."""

from __future__ import annotations

import ipaddress
import json

# Both pages' uploads, heat maps, CSVs and shown photos are deleted from Gradio's cache after an hour.
KEEP_FILES_S = 3600
# Sessions whose state Gradio keeps in memory (one per browser visit, and one per API call without a session): about
# 41 kB each for app.py's page, measured. Gradio's default of 10,000 made a page grow by some 400 MB over its first
# 10,000 requests before it levelled off. The page keeps nothing from one request to the next (no gr.State), so a
# visitor whose session was dropped loses nothing.
PAGE_SESSIONS = 500
# Requests waiting their turn; one more is refused at once (HTTP 503) with "busy, try again" (BUSY_SCRIPT's words in
# the browser's language), never left to time out. At ResNet50's slowest measured answer (docs/app.md, "Many
# visitors") the last of them is answered within about a minute.
QUEUE_MAX = 64


def busy_script(language: str, english: str, chinese: str) -> str:
    """A <script> for the page's <head> that shows Gradio's own busy sentence (its frontend's, in English only) in
    Chinese to a Chinese browser (or with --language zh), as language_of chooses for the page's answers."""
    return f"""<script>
(() => {{
  const forced = {json.dumps(language)}, english = {json.dumps(english)}, chinese = {json.dumps(chinese)};
  const first = ((navigator.languages || [])[0] || navigator.language || "").toLowerCase();
  if (forced === "en" || (forced === "auto" && !first.startsWith("zh"))) return;
  const translate = () => {{
    const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode());)
      if (node.nodeValue.includes(english)) node.nodeValue = node.nodeValue.replace(english, chinese);
  }};
  new MutationObserver(translate).observe(document.documentElement, {{childList: true, subtree: true, characterData: true}});
}})();
</script>"""


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
