"""Small real files of each kind an attachment can be, written where a test types paths."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 3, height: int = 2, *, padding: int = 0) -> bytes:
    """A valid PNG header (its pixels only for small images); `padding` bytes of an ancillary
    chunk make it as large as a test needs."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    pixels = b""
    if max(width, height) <= 64:
        rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
        pixels = chunk(b"IDAT", zlib.compress(rows))
    extra = chunk(b"tEXt", b"c\x00" + b"x" * padding) if padding else b""
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + extra + pixels + chunk(b"IEND", b""))


def pdf(pages: int = 1) -> bytes:
    """A PDF of `pages` empty pages with a correct xref table."""
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
