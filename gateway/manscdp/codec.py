"""MANSCDP bodies to messages and back (PROTOCOL.md §3). No I/O, no clock.

Theory of operation. `decode` runs, in order: the size cap (`MAX_BODY_BYTES`), charset
detection (`charset.decode_body`), hardened parsing (`_xml.parse_xml`: no DTD or entity,
depth cap), the root check (415 if not Query/Control/Notify/Response), then one table
lookup on (root, CmdType) to a decoder. Decoders read the envelope strictly (SN, 20-digit
DeviceID: 400 naming the element) and the rest tolerantly. A known root with an unknown
CmdType decodes to `UnknownMessage`, which the caller only acknowledges.

`encode` writes the prolog declaring the charset actually used, then the root, CmdType, SN
and DeviceID first, then the message's own elements. `encode_catalog_fragments` splits a
catalog for an upper platform (§6.1) into MESSAGE bodies under a byte budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _catalog
from ._readers import READERS, read_unknown
from ._values import canonical_tag, children, render, text_of
from ._writers import head, prolog, write_message
from ._xml import MAX_BODY_BYTES, parse_xml
from .charset import GB18030, UTF8, canonical_encoding, decode_body, encode_body
from .errors import ManscdpError
from .ids import parse_device_id
from .messages import ROOTS, CatalogItem, Message

__all__ = ["DEFAULT_FRAGMENT_BYTES", "decode", "encode", "encode_catalog_fragments"]

DEFAULT_FRAGMENT_BYTES = 1300
"""Per-MESSAGE body budget on UDP, bytes (RFC 3261 §18.1.1; PROTOCOL.md §7)."""

_ROOTS = {root.lower(): root for root in ROOTS}


def decode(body: bytes, *, encoding_override: str | None = None) -> tuple[Message, str]:
    """Decode one MANSCDP body; returns the message and the charset used (reply in it).

    Raises ManscdpError only: 400 for an oversized, malformed or hostile body or a bad
    envelope, 415 for an unhandled root element, 500 for an unknown `encoding_override`.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ManscdpError(f"MANSCDP body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    text, encoding = decode_body(body, encoding_override)
    root = parse_xml(text)
    root_name = _ROOTS.get(canonical_tag(root.tag).lower())
    if root_name is None:
        raise ManscdpError(f"unhandled MANSCDP root {root.tag[:40]!r}", status=415)
    fields = children(root)
    cmd_type = text_of(fields.get("CmdType"))
    if not cmd_type:
        raise ManscdpError("missing CmdType")
    decoder = READERS.get((root_name, cmd_type.lower()))
    if decoder is None:
        return read_unknown(root_name, cmd_type, fields), encoding
    return decoder(fields), encoding


def encode(msg: Message, encoding: str = "GB2312", *, gb_version: str = "2.0") -> bytes:
    """Encode `msg` as a body in `encoding` (GB2312, GBK, GB18030 or UTF-8).

    GB2312/GBK widen to GB18030 when a name needs it; the prolog declares what was used.
    `gb_version` is the peer's X-GB-Ver: "3.0" selects 2022 spellings (IFrameCmd,
    BusinessGroupID directly under a channel Item).
    """
    data, declared = encode_body(write_message(msg, gb_version), encoding)
    return prolog(declared) + data


def encode_catalog_fragments(
    sn: int,
    device_id: str,
    items: Sequence[CatalogItem],
    per_fragment: int = 50,
    encoding: str = "GB2312",
    *,
    max_bytes: int | None = DEFAULT_FRAGMENT_BYTES,
    gb_version: str = "2.0",
    notify: bool = False,
) -> list[bytes]:
    """Split a catalog into Response (or, with `notify`, Notify) Catalog bodies.

    Every fragment has SumNum = len(items) and DeviceList Num = its own item count, at most
    `per_fragment` items, and stays within `max_bytes` (None: no budget) unless one item
    alone exceeds it: every fragment carries at least one item. No items gives one empty
    fragment (SumNum 0). Each fragment declares GB18030 only if its own names need it.
    """
    if per_fragment < 1:
        raise ManscdpError(f"per_fragment must be >= 1, got {per_fragment}", status=500)
    if not 0 <= sn < 2**63:
        raise ManscdpError(f"SN out of range: {sn}", status=500)
    canon = canonical_encoding(encoding)
    root = "Notify" if notify else "Response"
    opening = "".join(head(root, "Catalog", sn, parse_device_id(device_id)))
    opening += render("SumNum", len(items))
    tail = f"</DeviceList>\r\n</{root}>\r\n"
    widest = len(prolog(UTF8 if canon == UTF8 else GB18030))
    fixed = widest + len(opening) + len(tail) + len('<DeviceList Num="">\r\n')

    encoded: list[tuple[bytes, bool]] = []
    for item in items:
        data, declared = encode_body(_catalog.render_item(item, gb_version), canon)
        encoded.append((data, declared != canon))

    budget = max_bytes if max_bytes is not None else -1
    groups: list[list[tuple[bytes, bool]]] = []
    current: list[tuple[bytes, bool]] = []
    size = 0
    for entry in encoded:
        if current:
            count = len(current) + 1
            total = fixed + len(str(count)) + size + len(entry[0])
            if count > per_fragment or (budget >= 0 and total > budget):
                groups.append(current)
                current, size = [], 0
        current.append(entry)
        size += len(entry[0])
    if current or not groups:
        groups.append(current)

    fragments: list[bytes] = []
    for group in groups:
        declared = GB18030 if any(wide for _, wide in group) else canon
        start = f'{opening}<DeviceList Num="{len(group)}">\r\n'.encode("ascii")
        body = b"".join(data for data, _ in group)
        fragments.append(prolog(declared) + start + body + tail.encode("ascii"))
    return fragments
