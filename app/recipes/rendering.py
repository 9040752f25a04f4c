"""Step instructions as HTML: Markdown with raw HTML switched off, images served from the version's attachments."""

from __future__ import annotations

import re
from collections.abc import Callable

from markdown_it import MarkdownIt
from markupsafe import Markup

# CommonMark without raw HTML: whatever an author types is escaped, and markdown-it refuses javascript: links.
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_ATTACHMENT_URL = re.compile(r"\(attachment:([A-Za-z0-9][A-Za-z0-9._-]*)\)")


def instructions_html(text: str, image_url: Callable[[str], str]) -> Markup:
    """Render instructions; ``![caption](attachment:NAME)`` shows the version's uploaded image NAME."""
    source = _ATTACHMENT_URL.sub(lambda m: f"({image_url(m.group(1))})", text or "")
    return Markup(_MD.render(source))  # noqa: S704 (markdown-it escapes all input: html is disabled)
