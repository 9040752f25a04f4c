"""Printable labels (PDF, one label per page) with a QR code (segno) or a Code 128 barcode (python-barcode).

Rendered by WeasyPrint from HTML with the symbol inlined as SVG, so nothing is fetched at print time.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import barcode
import segno
from barcode.writer import SVGWriter
from markupsafe import Markup

SYMBOLOGIES = ("qr", "code128")


@dataclass(frozen=True)
class Label:
    """One label: a title, a few lines of text, and the code that a scan resolves."""

    title: str
    code: str
    lines: list[str] = field(default_factory=list)


def symbol_svg(code: str, symbology: str) -> str:
    """The code as an SVG image (data URI) in the chosen symbology."""
    if symbology == "qr":
        buffer = io.BytesIO()
        segno.make(code, error="m", micro=False).save(buffer, kind="svg", scale=4, border=2, xmldecl=False)
        svg = buffer.getvalue()
    elif symbology == "code128":
        buffer = io.BytesIO()
        barcode.get("code128", code, writer=SVGWriter()).write(
            buffer, options={"module_width": 0.25, "module_height": 9.0, "font_size": 0, "quiet_zone": 2.0,
                             "write_text": False})
        svg = buffer.getvalue()
    else:
        raise ValueError(f"unknown symbology {symbology!r}; use one of {', '.join(SYMBOLOGIES)}")
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


_CSS = """
@page { size: 70mm 40mm; margin: 2mm; }
body { font-family: "DejaVu Sans", sans-serif; margin: 0; }
.label { page-break-after: always; height: 36mm; display: flex; gap: 2mm; align-items: center; }
.label.code128 { flex-direction: column; align-items: stretch; gap: 1mm; }
.label img.qr { width: 30mm; height: 30mm; }
.label img.code128 { width: 66mm; height: 12mm; }
h1 { font-size: 11pt; margin: 0 0 1mm; }
p { font-size: 7pt; margin: 0; }
p.code { font-family: "DejaVu Sans Mono", monospace; font-size: 7pt; }
"""


def labels_html(labels: list[Label], symbology: str) -> str:
    """The HTML the PDF is rendered from (also handy to preview)."""
    parts = []
    for label in labels:
        text = Markup("").join(Markup("<p>{}</p>").format(line) for line in label.lines)
        parts.append(Markup(
            '<div class="label {sym}"><img class="{sym}" src="{src}" alt="{code}">'
            '<div><h1>{title}</h1>{text}<p class="code">{code}</p></div></div>'
        ).format(sym=symbology, src=symbol_svg(label.code, symbology), code=label.code, title=label.title,
                 text=text))
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{_CSS}</style></head><body>" \
           f"{''.join(parts)}</body></html>"


def labels_pdf(labels: list[Label], symbology: str = "qr") -> bytes:
    """Render labels to a PDF, one label per page (label printers print page by page)."""
    from weasyprint import HTML  # imported lazily: it loads Pango, which only label printing needs

    if not labels:
        raise ValueError("no labels to print")
    return HTML(string=labels_html(labels, symbology)).write_pdf()
