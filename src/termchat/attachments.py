"""Files handed to the model: loaded and checked before anything is sent, shown, completed as
paths and found as `@path` mentions in a prompt."""

from __future__ import annotations

import codecs
import hashlib
import io
import itertools
import math
import os
import re
import stat
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from termchat.content import Attachment, AttachmentKind
from termchat.errors import UsageError
from termchat.untrusted import safe_line

KB = 1024
MB = 1024 * KB


class AttachmentError(UsageError):
    """A file that cannot be attached, or not for this provider: one sentence naming it."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one provider takes. Byte limits are on the file, or, when `encoded`, on the base64
    text a request carries for it (4/3 of the file)."""

    encoded: bool
    image_bytes: int
    image_side: int | None
    document_bytes: int
    # Per request: pages of all PDFs, images, and everything attached once encoded.
    document_pages: int
    images: int
    request_bytes: int
    # With more images than `many_images` in one request, each side is held to `many_side`.
    many_images: int | None = None
    many_side: int | None = None


# Text is sent as text, so no provider sets a limit of its own: 1 MB is ours. It is already
# about 250k tokens, more than most context windows (the context estimate catches the rest),
# and it stops an attached log from making a request of tens of megabytes.
TEXT_BYTES = 1 * MB

# Sources, as read in 2025; the providers' own errors (mapped in providers/) cover any change.
LIMITS: dict[str, Limits] = {
    # docs.anthropic.com/en/docs/build-with-claude/vision: images up to 8000×8000 px, 2000×2000
    # px when a request carries more than 20; up to 600 images a request (100 for models with
    # a 200k window: we refuse only what no model takes). The 5 MB image limit counts the
    # base64 text, 5 × 2^20 characters: the API answers "image exceeds 5 MB maximum: N bytes >
    # 5242880 bytes" (anthropics/claude-code#14887), and Claude Code keeps its images under
    # 3/4 of that (constants/apiLimits.ts, API_IMAGE_MAX_BASE64_SIZE). .../pdf-support: at most
    # 32 MB a request, 100 pages; MB taken as 2^20 like the image limit.
    "anthropic": Limits(encoded=True, image_bytes=5 * MB, image_side=8000,
                        document_bytes=32 * MB, document_pages=100, images=600,
                        request_bytes=32 * MB, many_images=20, many_side=2000),
    # OpenAI's vision guide (platform.openai.com/docs/guides/images-vision): 500 images and
    # 50 MB of payload a request; 20 MB an image is its older per-image figure, kept as the
    # one limit on a single image (large images are scaled down, so no dimension limit).
    # .../guides/pdf-files: up to 100 pages and 32 MB of PDFs in one request. Taken as limits
    # on the files, MB as 2^20. OpenAI-compatible servers set their own, unknown here.
    "openai": Limits(encoded=False, image_bytes=20 * MB, image_side=None,
                     document_bytes=32 * MB, document_pages=100, images=500,
                     request_bytes=50 * MB),
}


def encoded_size(size: int) -> int:
    """The length of the base64 text for `size` bytes."""
    return (size + 2) // 3 * 4


def _file_limit(limit: int, encoded: bool) -> int:
    """The largest file whose size (or base64 text, when `encoded`) is within `limit`."""
    return limit // 4 * 3 if encoded else limit


def _largest(kind: AttachmentKind) -> int:
    """The largest file of `kind` any provider takes: a larger one is refused unread."""
    if kind is AttachmentKind.TEXT:
        return TEXT_BYTES
    return max(_file_limit(limits.image_bytes if kind is AttachmentKind.IMAGE
                           else limits.document_bytes, limits.encoded)
               for limits in LIMITS.values())


READ_LIMIT = max(_largest(kind) for kind in AttachmentKind)
"""The most bytes an attachment can have; read one more to know a source is larger."""

# Enough to tell the kind and to refuse an obviously binary file before reading it whole.
_SNIFF = 64 * KB

_KIND_WORDS = {AttachmentKind.TEXT: "text files", AttachmentKind.IMAGE: "images",
               AttachmentKind.DOCUMENT: "PDFs"}
_IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
                  "image/webp": "WebP"}


def human_size(size: int, *, down: bool = False) -> str:
    """`size` bytes for people: `512 B`, `2.1 KB`, `340 KB`, `7.2 MB` (one decimal below 100;
    `down` rounds down, for limits, so a limit is never shown larger than it is)."""
    if size < KB:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= KB
        if down:
            shown = math.floor(value * 10) / 10 if value < 100 else math.floor(value)
        else:
            shown = round(value, 1) if value < 100 else round(value)
        if shown < KB or unit == "TB":
            break
    text = f"{shown:.1f}".removesuffix(".0") if shown < 100 else f"{shown:.0f}"
    return f"{text} {unit}"


def _sizes(size: int, limit: int) -> tuple[str, str]:
    """`size` and `limit` shown so that the first reads larger: in bytes when rounding would
    show them equal."""
    shown, most = human_size(size), human_size(limit, down=True)
    if shown == most:
        return f"{size:,} bytes", f"{limit:,} bytes"
    return shown, most


# Loading

def load(path: str | Path, *, name: str | None = None) -> Attachment:
    """The file at `path` (`~` expanded) as an attachment named `name` (by default the path as
    given), its kind detected from its content; refused with one sentence when it is missing,
    not a regular file, unreadable, larger than any provider takes, or binary of an unknown
    kind. A file larger than that is refused without being read past its first 64 KB."""
    label = name if name is not None else str(path)
    target = Path(path).expanduser()
    try:
        mode = os.stat(target).st_mode
        if stat.S_ISDIR(mode):
            raise _refused(label, "it is a directory")
        if not stat.S_ISREG(mode):
            raise _refused(label, "it is not a regular file")
        with open(target, "rb", buffering=0) as file:
            return _take(label, file, os.fstat(file.fileno()).st_size)
    except OSError as error:
        raise _refused(label, _reason(target, error)) from None


def load_stdin(source: bytes | BinaryIO, *, name: str = "stdin") -> Attachment:
    """Standard input (`-a -`) as an attachment: `source` is its bytes, or a binary stream
    read like a file, no further than one byte past the limit."""
    if isinstance(source, bytes):
        return _take(name, io.BytesIO(source), len(source))
    return _take(name, source, None)


def _take(label: str, file: BinaryIO, size: int | None) -> Attachment:
    """The attachment `file` holds: its kind from its first bytes, then no more of it read
    than the largest file of that kind any provider takes, and one byte. `size` is what the
    file says it holds, if it says."""
    head = _read(file, _SNIFF)
    kind = _sniff(head)
    if kind is None:
        raise _binary(label)
    largest = _largest(kind)
    if size is not None and size > largest:
        raise _too_large(label, kind, size)
    data = head + _read(file, largest + 1 - len(head))
    if len(data) > largest:
        raise _too_large(label, kind, None)
    return _attachment(label, data)


def _read(file: BinaryIO, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = file.read(min(size, MB))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _refused(label: str, reason: str) -> AttachmentError:
    return AttachmentError(f"cannot attach {safe_line(label)}: {reason}")


def _reason(target: Path, error: OSError) -> str:
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return "it is a broken symbolic link" if target.is_symlink() else "no such file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "it is a directory"
    return (error.strerror or type(error).__name__).lower()


def _binary(label: str) -> AttachmentError:
    return _refused(label, "it is binary data of an unknown kind (only text, PNG, JPEG, GIF, "
                           "WebP and PDF can be attached)")


def _too_large(label: str, kind: AttachmentKind, size: int | None) -> AttachmentError:
    """`size` None: larger than the limit, by how much unknown (the rest was not read)."""
    limit = _largest(kind)
    if size is None:
        most = human_size(limit, down=True)
        amount = f"over {most}"
    else:
        amount, most = _sizes(size, limit)
    if kind is AttachmentKind.TEXT:
        return _refused(label, f"it is {amount}; text files can be attached up to {most}")
    return _refused(label, f"it is {amount}; no provider takes {_KIND_WORDS[kind]} over {most}")


def _magic(data: bytes) -> str | None:
    """The media type `data`'s first bytes say it is, for the kinds besides text."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _kind(media_type: str) -> AttachmentKind:
    return AttachmentKind.DOCUMENT if media_type == "application/pdf" else AttachmentKind.IMAGE


def _codec(data: bytes) -> str:
    """UTF-16 when a UTF-16 byte order mark says so; otherwise UTF-8 (with or without one)."""
    return "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"


# Controls that text holds few of (one in a hundred characters at most): tab, the newlines,
# vertical tab, form feed and escape (coloured logs) are not counted; NUL is never text.
_CONTROLS = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def _is_text(text: str) -> bool:
    return "\x00" not in text and len(_CONTROLS.findall(text)) * 100 <= len(text)


def _sniff(head: bytes) -> AttachmentKind | None:
    """The kind `head` (a file's first bytes) shows; None for binary data of no known kind.
    The last character may be cut in two, so the decoder is not told the text ends."""
    media_type = _magic(head)
    if media_type is not None:
        return _kind(media_type)
    try:
        text = codecs.getincrementaldecoder(_codec(head))().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    return AttachmentKind.TEXT if _is_text(text) else None


def _decode(data: bytes) -> str | None:
    try:
        text = data.decode(_codec(data))
    except UnicodeDecodeError:
        return None
    return text if _is_text(text) else None


def _attachment(label: str, data: bytes) -> Attachment:
    """`data` classified by its content. A text file's data is its text as UTF-8 (without a
    byte order mark), so everything downstream reads it one way and equal texts are stored
    once."""
    media_type = _magic(data)
    if media_type is None:
        text = _decode(data)
        if text is None:
            raise _binary(label)
        data, media_type, kind = text.encode("utf-8"), "text/plain", AttachmentKind.TEXT
    else:
        kind = _kind(media_type)
        if kind is AttachmentKind.IMAGE and image_size(data, media_type) is None:
            raise _refused(label, f"it starts like a {_IMAGE_FORMATS[media_type]} image but "
                                  "its header is damaged")
    if len(data) > _largest(kind):  # a text in UTF-16 can grow as UTF-8
        raise _too_large(label, kind, len(data))
    return Attachment(name=label, media_type=media_type, kind=kind,
                      digest=hashlib.sha256(data).hexdigest(), size=len(data), data=data)


# What is inside

_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_size(data: bytes, media_type: str) -> tuple[int, int] | None:
    """An image's width and height in pixels, from its header; None when the header does not
    say (cut short, damaged, or not that format)."""
    size: tuple[int, int] | None = None
    try:
        if media_type == "image/png" and data[12:16] == b"IHDR":
            size = struct.unpack(">II", data[16:24])
        elif media_type == "image/gif" and data[:6] in (b"GIF87a", b"GIF89a"):
            size = struct.unpack("<HH", data[6:10])
        elif media_type == "image/webp":
            size = _webp_size(data)
        elif media_type == "image/jpeg":
            size = _jpeg_size(data)
    except struct.error:
        return None
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height) if len(data) >= 30 else None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment, walking the segments before it."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
        elif marker in (0xD9, 0xDA):  # the end, or the scan, before any frame header
            return None
        elif marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        else:
            (length,) = struct.unpack(">H", data[at + 2:at + 4])
            at += 2 + length
    return None


_PAGES = re.compile(rb"/Type\s*/Pages(?![A-Za-z0-9])")
_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
# Numbers are bounded: int() refuses more than 4300 digits, and no count needs 13.
_COUNT = re.compile(rb"/Count\s+(\d{1,12})(?!\d)")
_PARENT = re.compile(rb"/Parent\s")
_FIRST = re.compile(rb"/First\s+(\d{1,12})(?!\d)")
# What an object stream may decompress to, in all: a PDF's page tree is far smaller, and a
# stream that inflates without end is not read past it.
_INFLATE_BUDGET = 16 * MB


def pdf_pages(data: bytes) -> int | None:
    """A PDF's page count, from its page tree's root (`/Type /Pages` without a `/Parent`),
    in the file or in a compressed object stream; the last root wins, as a PDF updated in
    place appends its new objects. None when no root can be found (an encrypted object
    stream, a damaged file)."""
    roots: list[tuple[int, int]] = []
    for match in _PAGES.finditer(data):
        start = max(data.rfind(b"obj", 0, match.start()), 0)
        end = data.find(b"endobj", match.end())
        count = _root_count(data[start:end if end >= 0 else len(data)])
        if count is not None:
            roots.append((match.start(), count))
    budget = _INFLATE_BUDGET
    for match in _OBJECT_STREAM.finditer(data):
        header_start = max(data.rfind(b"obj", 0, match.start()), 0)
        stream_start = data.find(b"stream", match.end())
        if stream_start < 0 or budget <= 0:
            break
        header = data[header_start:stream_start]
        stream = _stream(data, stream_start, budget, b"/FlateDecode" in header)
        budget -= len(stream)
        for body in _stream_objects(header, stream):
            count = _root_count(body) if _PAGES.search(body) else None
            if count is not None:
                roots.append((match.start(), count))
    return max(roots)[1] if roots else None


def _root_count(body: bytes) -> int | None:
    if _PARENT.search(body):
        return None
    count = _COUNT.search(body)
    return int(count.group(1)) if count else None


def _stream(data: bytes, at: int, budget: int, compressed: bool) -> bytes:
    """The content of the stream whose `stream` keyword is at `at`, inflated when
    `compressed` (no more than `budget` bytes of it); empty when it does not inflate."""
    start = at + len(b"stream")
    start += 2 if data[start:start + 2] == b"\r\n" else 1
    end = data.find(b"endstream", start)
    raw = data[start:end if end >= 0 else len(data)]
    if not compressed:
        return raw[:budget]
    try:
        return zlib.decompressobj().decompress(raw, budget)
    except zlib.error:
        return b""


def _stream_objects(header: bytes, stream: bytes) -> list[bytes]:
    """The objects an object stream holds: its `/First` bytes are pairs of object number and
    offset (from `/First`), and the objects follow."""
    first = _FIRST.search(header)
    if first is None:
        return []
    start = int(first.group(1))
    numbers = stream[:start].split()
    offsets = sorted(int(n) for n in numbers[1::2] if n.isdigit() and len(n) <= 12)
    bounds = [start + offset for offset in offsets] + [len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


# Pages found per PDF, so a chip or a history screen redrawn does not scan 32 MB again.
_PAGE_CACHE: dict[str, int | None] = {}


def _pages(attachment: Attachment) -> int | None:
    if attachment.digest not in _PAGE_CACHE:
        if len(_PAGE_CACHE) >= 64:
            _PAGE_CACHE.clear()
        _PAGE_CACHE[attachment.digest] = pdf_pages(attachment.data)
    return _PAGE_CACHE[attachment.digest]


# Provider limits

def _limits(provider: str) -> Limits:
    try:
        return LIMITS[provider]
    except KeyError:
        raise ValueError(f"no attachment limits for provider {provider!r}") from None


def check(attachment: Attachment, provider: str) -> None:
    """Refuse, with one sentence giving the size and the limit, an attachment `provider` does
    not take: too many bytes, too many pixels on a side, too many pages."""
    limits = _limits(provider)
    name = safe_line(attachment.name)
    kind, size = attachment.kind, attachment.size
    if kind is AttachmentKind.TEXT:
        if size > TEXT_BYTES:
            shown, most = _sizes(size, TEXT_BYTES)
            raise AttachmentError(f"{name} is {shown}; text files can be attached up to {most}")
        return
    image = kind is AttachmentKind.IMAGE
    limit = limits.image_bytes if image else limits.document_bytes
    if size > _file_limit(limit, limits.encoded):
        shown, most = _sizes(size, _file_limit(limit, limits.encoded))
        encoded = f" ({human_size(limit, down=True)} once base64-encoded)" if limits.encoded else ""
        raise AttachmentError(f"{name} is {shown}; {provider} takes {_KIND_WORDS[kind]} up to "
                              f"{most}{encoded}")
    if image:
        _check_side(attachment, limits.image_side, f"{provider} takes")
    else:
        pages = _pages(attachment)
        if pages is not None and pages > limits.document_pages:
            raise AttachmentError(f"{name} has {pages} pages; {provider} takes PDFs of up to "
                                  f"{limits.document_pages} pages")


def _check_side(attachment: Attachment, side: int | None, who: str) -> None:
    dimensions = image_size(attachment.data, attachment.media_type)
    if side is not None and dimensions is not None and max(dimensions) > side:
        width, height = dimensions
        raise AttachmentError(f"{safe_line(attachment.name)} is {width}×{height} px; {who} "
                              f"images up to {side}×{side} px")


def check_request(attachments: Sequence[Attachment], provider: str) -> None:
    """`check` for each of the attachments one request carries (a continued conversation
    resends its earlier ones), and the provider's limits on them together: images per
    request, their sides when there are many, pages and bytes in all."""
    limits = _limits(provider)
    for attachment in attachments:
        check(attachment, provider)
    images = [a for a in attachments if a.kind is AttachmentKind.IMAGE]
    documents = [a for a in attachments if a.kind is AttachmentKind.DOCUMENT]
    if len(images) > limits.images:
        raise AttachmentError(f"the request carries {len(images)} images; {provider} takes up "
                              f"to {limits.images} in one request")
    if limits.many_images is not None and len(images) > limits.many_images:
        for image in images:
            _check_side(image, limits.many_side, f"with more than {limits.many_images} images "
                                                 f"in one request, {provider} takes")
    pages = sum(_pages(document) or 0 for document in documents)
    if pages > limits.document_pages:
        raise AttachmentError(f"the PDFs add up to {pages} pages; {provider} takes up to "
                              f"{limits.document_pages} pages in one request")
    document_bytes = sum(encoded_size(d.size) if limits.encoded else d.size for d in documents)
    if document_bytes > limits.document_bytes:
        shown, most = _sizes(document_bytes, limits.document_bytes)
        encoded = " once base64-encoded" if limits.encoded else ""
        raise AttachmentError(f"the PDFs add up to {shown}{encoded}; {provider} takes up to "
                              f"{most} of PDFs in one request")
    total = sum(a.size if a.kind is AttachmentKind.TEXT else encoded_size(a.size)
                for a in attachments)
    if total > limits.request_bytes:
        shown, most = _sizes(total, limits.request_bytes)
        raise AttachmentError(f"the attachments add up to {shown} once encoded; {provider} "
                              f"takes up to {most} in one request")


def estimate_tokens(attachment: Attachment, provider: str) -> int | None:
    """A low estimate of the input tokens `attachment` costs with `provider`, for warning
    that a request will clearly not fit; None when unknown. Text: a token per 4 characters.
    Anthropic images: width × height / 750 once scaled to 1568 px on the long side, at most
    about 1600 (docs: vision, "Evaluate image size"). OpenAI images: 85 + 170 per 512 px tile
    once scaled into 2048 px and then to 768 px on the short side (the GPT-4o rule; newer
    models count patches and cost more). PDFs: 1500 a page, the least Anthropic says a page
    of text takes; each page is also sent as an image."""
    _limits(provider)  # an unknown provider is refused, as by `check`
    if attachment.kind is AttachmentKind.TEXT:
        return math.ceil(len(text_block(attachment)) / 4)
    if attachment.kind is AttachmentKind.DOCUMENT:
        pages = _pages(attachment)
        return None if pages is None else pages * 1500
    dimensions = image_size(attachment.data, attachment.media_type)
    if dimensions is None:
        return None
    if provider == "anthropic":
        scale = min(1.0, 1568 / max(dimensions))
        return min(math.ceil(dimensions[0] * dimensions[1] * scale * scale / 750), 1600)
    scale = min(1.0, 2048 / max(dimensions))
    width, height = dimensions[0] * scale, dimensions[1] * scale
    scale = min(1.0, 768 / min(width, height))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return 85 + 170 * tiles


# A provider's refusal of a request that carried files

_REJECTED = re.compile(r"(?P<host>\S+) (?:rejected|refused) the request "
                       r"\((?P<status>\d+): (?P<message>.*)\); check ")
_IMAGE_WORDS = ("image", "vision", "picture", "multimodal", "multi-modal")
_DOCUMENT_WORDS = ("pdf", "document", "file")


@dataclass(frozen=True)
class Rejection:
    """A server's refusal of a request with images or PDFs, read from termchat's one-line
    provider error: who refused, its status and words, and the files it is most likely about
    (the server's own error cannot know which file the user meant)."""

    host: str
    status: str
    message: str
    named: tuple[Attachment, ...]

    @property
    def names(self) -> str:
        return ", ".join(safe_line(a.name) for a in self.named)

    @property
    def kinds(self) -> str:
        """`images`, `PDFs` or `images or PDFs`."""
        return " or ".join(dict.fromkeys(
            "images" if a.kind is AttachmentKind.IMAGE else "PDFs" for a in self.named))


def rejection(error_message: str, attachments: Sequence[Attachment]) -> Rejection | None:
    """The refusal in `error_message` (a bad-request error's) of a request that carried
    images or PDFs among `attachments`; None when it is not one."""
    media = [a for a in attachments if a.kind is not AttachmentKind.TEXT]
    match = _REJECTED.match(error_message)
    if match is None or not media:
        return None
    words = match["message"].lower()
    images = [a for a in media if a.kind is AttachmentKind.IMAGE]
    documents = [a for a in media if a.kind is AttachmentKind.DOCUMENT]
    named = (images if any(w in words for w in _IMAGE_WORDS) else []) + \
        (documents if any(w in words for w in _DOCUMENT_WORDS) else [])
    return Rejection(match["host"], match["status"], match["message"], tuple(named or media))


# What the model is sent, and what the user sees

_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "jsx", ".ts": "typescript", ".tsx": "tsx", ".rs": "rust",
    ".go": "go", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp",
    ".hpp": "cpp", ".hh": "cpp", ".java": "java", ".kt": "kotlin", ".kts": "kotlin",
    ".swift": "swift", ".rb": "ruby", ".php": "php", ".cs": "csharp", ".fs": "fsharp",
    ".scala": "scala", ".lua": "lua", ".pl": "perl", ".r": "r", ".jl": "julia", ".hs": "haskell",
    ".ml": "ocaml", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".clj": "clojure",
    ".dart": "dart", ".zig": "zig", ".nim": "nim", ".sh": "bash", ".bash": "bash",
    ".zsh": "zsh", ".fish": "fish", ".ps1": "powershell", ".sql": "sql", ".html": "html",
    ".htm": "html", ".css": "css", ".scss": "scss", ".xml": "xml", ".svg": "xml",
    ".json": "json", ".jsonl": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".ini": "ini", ".cfg": "ini", ".md": "markdown", ".markdown": "markdown", ".rst": "rst",
    ".tex": "latex", ".diff": "diff", ".patch": "diff", ".proto": "protobuf",
    ".graphql": "graphql", ".tf": "hcl", ".vue": "vue", ".svelte": "svelte",
}
_LANGUAGE_FILES = {"makefile": "make", "gnumakefile": "make", "dockerfile": "dockerfile",
                   "containerfile": "dockerfile", "cmakelists.txt": "cmake"}
_BACKTICKS = re.compile("`+")


def language(name: str) -> str:
    """The fence's language hint for a file called `name`, or '' when not obvious."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return _LANGUAGE_FILES.get(base) or _LANGUAGES.get(os.path.splitext(base)[1], "")


def text_block(attachment: Attachment) -> str:
    """A text attachment as the model is sent it, in plain text both providers take: a line
    naming the file, then its content fenced, with a fence longer than any run of backticks
    inside (so nothing in the file can close it) and a language hint from the extension."""
    text = attachment.data.decode("utf-8", "replace")
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if not text or text.endswith("\n") else text + "\n"
    return f"File: {safe_line(attachment.name)}\n{fence}{language(attachment.name)}\n{body}{fence}"


def describe(attachment: Attachment) -> str:
    """One line for chips, `--show` and history: `notes.md · text · 2.1 KB`,
    `photo.png · image 1024×768 · 340 KB`, `report.pdf · PDF, 12 pages · 1.2 MB`."""
    if attachment.kind is AttachmentKind.TEXT:
        what = "text"
    elif attachment.kind is AttachmentKind.IMAGE:
        dimensions = image_size(attachment.data, attachment.media_type)
        what = "image" if dimensions is None else f"image {dimensions[0]}×{dimensions[1]}"
    else:
        pages = _pages(attachment)
        what = "PDF" if pages is None else f"PDF, {pages} page{'' if pages == 1 else 's'}"
    return f"{safe_line(attachment.name)} · {what} · {human_size(attachment.size)}"


# Paths typed by the user

def complete(prefix: str, cwd: Path, *, limit: int = 50) -> list[str]:
    """Paths that `prefix` may be completing, relative to `cwd`: spelt as the user began them
    (a `~` stays, and is expanded to look), directories with a trailing `/`, hidden entries
    only when the name typed starts with `.`, sorted, at most `limit`. An unreadable or
    missing directory has no candidates."""
    if prefix == "~":
        return ["~/"]
    head, slash, tail = prefix.rpartition("/")
    head += slash
    directory = Path(os.path.expanduser(head)) if head else Path()
    if not directory.is_absolute():
        directory = cwd / directory
    hidden = tail.startswith(".")
    found: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.startswith(tail) or (entry.name[0] == "." and not hidden):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                found.append(f"{head}{entry.name}{'/' if is_dir else ''}")
    except (OSError, ValueError):
        return []
    found.sort(key=lambda candidate: (candidate.casefold(), candidate))
    return found[:limit]


# `@` at the start or after whitespace or an opening bracket (so `a@b.com` is no mention),
# then a quoted path (`\"` and `\\` escaped; the closing quote may be missing while typing) or
# a bare one, possibly empty while typing.
_MENTION = re.compile(r'(?<![^\s(\[{])@(?:"((?:[^"\\\n]|\\["\\]?)*)("?)|([^\s"]*))')
_ESCAPE = re.compile(r'\\(["\\])')
# A bare path does not end in punctuation: "see @notes.md." mentions notes.md.
_TRAILING = ".,;:!?)]}'"


def find_mentions(prompt: str) -> list[tuple[int, int, str]]:
    """The `@path` and `@"quoted path"` mentions in `prompt`, in order, as (start, end, path)
    with `prompt[start:end]` the whole mention. Whether the path exists is the caller's to
    check."""
    mentions: list[tuple[int, int, str]] = []
    for match in _MENTION.finditer(prompt):
        quoted, closed, bare = match.groups()
        if bare is not None:
            path = bare.rstrip(_TRAILING)
            if path:
                mentions.append((match.start(), match.start() + 1 + len(path), path))
        elif closed and quoted:
            mentions.append((match.start(), match.end(), _ESCAPE.sub(r"\1", quoted)))
    return mentions


def mention_at(prompt: str, cursor: int) -> tuple[int, int, str] | None:
    """The mention being typed at `cursor`, for completion: (start, end) of the whole token
    (an unfinished quote too), and the path typed up to the cursor; None when the cursor is
    not in one."""
    for match in _MENTION.finditer(prompt):
        start = match.start()
        if start >= cursor:
            break
        if cursor > match.end():
            continue
        _, closed, bare = match.groups()
        if bare is not None:
            return start, match.end(), prompt[start + 1:cursor]
        body_end = match.end() - len(closed)
        typed = prompt[start + 2:min(cursor, body_end)] if cursor > start + 1 else ""
        return start, match.end(), _ESCAPE.sub(r"\1", typed)
    return None


def mention(path: str) -> str:
    """`path` as a mention `find_mentions` reads back as `path`: bare when it can be, quoted
    otherwise. A path with a newline cannot be mentioned."""
    if not path or "\n" in path:
        raise ValueError("a mention's path is one non-empty line")
    if re.fullmatch(r'[^\s"]+', path) and path[-1] not in _TRAILING:
        return f"@{path}"
    escaped = path.replace("\\", "\\\\").replace('"', '\\"')
    return f'@"{escaped}"'
