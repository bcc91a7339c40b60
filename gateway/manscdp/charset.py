"""Body charsets (PROTOCOL.md §3.2, quirk Q-1).

Decoding, in order: a per-device override if set; else UTF-8 when the bytes are valid UTF-8
and contain non-ASCII (lower platforms that declare GB2312 but send UTF-8, wvp#260); else
GB18030, a byte superset of GB2312 and GBK, with ``errors="replace"`` as the last resort
(rare characters arrive as GBK/GB18030 bytes, wvp#1344). The declaration is never trusted
for decoding, only reported for pure-ASCII bodies so a reply can use the device's charset.

Encoding: the GB family is always written with the gb18030 codec, so that our bytes decode
back identically. Python's ``gb2312`` codec maps A1A4/A1AA to U+30FB/U+2015 where GB18030
(and GBK) use U+00B7/U+2014; those are the only two differences in the GB2312 range. The
declared name is the requested one when the text fits that charset, else ``GB18030``.
"""

from __future__ import annotations

import re

from .errors import ManscdpError

__all__ = [
    "GB2312",
    "GB18030",
    "GBK",
    "UTF8",
    "canonical_encoding",
    "decode_body",
    "encode_body",
]

GB2312 = "GB2312"
GBK = "GBK"
GB18030 = "GB18030"
UTF8 = "UTF-8"

_ALIASES: dict[str, str] = {
    "gb2312": GB2312,
    "gb_2312": GB2312,
    "gb_2312-80": GB2312,
    "gb2312-80": GB2312,
    "euc-cn": GB2312,
    "euccn": GB2312,
    "gbk": GBK,
    "cp936": GBK,
    "ms936": GBK,
    "windows-936": GBK,
    "gb18030": GB18030,
    "gb-18030": GB18030,
    "gb18030-2000": GB18030,
    "gb18030-2005": GB18030,
    "gb18030-2022": GB18030,
    "utf-8": UTF8,
    "utf8": UTF8,
    "utf_8": UTF8,
}

_DECLARATION = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]{1,40})["']""")

# Make the GB2312 fit test agree with the gb18030 mapping (see the module docstring):
# U+00B7 / U+2014 are GB2312 bytes A1A4 / A1AA; U+30FB / U+2015 are not in GB2312 there.
_GB2312_FIT = str.maketrans(
    {"\u00b7": "\u30fb", "\u2014": "\u2015", "\u30fb": "\uffff", "\u2015": "\uffff"}
)

_TRAILING = b"\x00\t\n\r "


def canonical_encoding(name: str) -> str:
    """Map a charset name to ``GB2312``, ``GBK``, ``GB18030`` or ``UTF-8``.

    Raises ManscdpError (status 500: it is our configuration) for anything else.
    """
    canon = _ALIASES.get(name.strip().lower())
    if canon is None:
        raise ManscdpError(f"unsupported MANSCDP charset {name[:40]!r}", status=500)
    return canon


def _declared(head: str) -> str | None:
    """The canonical charset named in an XML declaration at the start of `head`, if any."""
    match = _DECLARATION.match(head)
    if match is None:
        return None
    return _ALIASES.get(match.group(1).lower())


def decode_body(body: bytes, override: str | None = None) -> tuple[str, str]:
    """Decode a MANSCDP body to text; returns (text, canonical charset used or to reply in).

    Trailing NULs and whitespace are stripped first. Never raises for any byte string,
    except ManscdpError(500) for an unknown `override`.
    """
    body = body.rstrip(_TRAILING)
    if override is not None:
        canon = canonical_encoding(override)
        codec = "utf-8" if canon == UTF8 else "gb18030"
        return body.decode(codec, errors="replace"), canon
    if body.isascii():
        text = body.decode("ascii")
        return text, _declared(text[:200]) or GB2312
    try:
        return body.decode("utf-8"), UTF8
    except UnicodeDecodeError:
        pass
    text = body.decode("gb18030", errors="replace")
    declared = _declared(text[:200])
    # A device that declared UTF-8 but sent GB bytes gets GB2312 replies.
    return text, declared if declared is not None and declared != UTF8 else GB2312


def _fits(text: str, canon: str) -> bool:
    """True if every character of `text` exists in the charset `canon` (GB family)."""
    if text.isascii() or canon == GB18030:
        return True
    try:
        if canon == GB2312:
            text.translate(_GB2312_FIT).encode("gb2312")
        else:
            text.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


def encode_body(text: str, encoding: str) -> tuple[bytes, str]:
    """Encode `text`; returns (bytes, charset to declare). GB2312/GBK widen to GB18030.

    Characters no charset can carry (lone surrogates) become ``?``.
    """
    canon = canonical_encoding(encoding)
    if canon == UTF8:
        return text.encode("utf-8", errors="replace"), UTF8
    declared = canon if _fits(text, canon) else GB18030
    return text.encode("gb18030", errors="replace"), declared
