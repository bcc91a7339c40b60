"""The one error type of the MANSCDP codec.

The codec raises; the SIP shell maps the error to a response once (STYLE.md "Typed errors").
`status` is a hint in the h11 manner: the library suggests, the server decides.
"""

from __future__ import annotations

__all__ = ["ManscdpError"]


class ManscdpError(ValueError):
    """A MANSCDP body that cannot be accepted, or a value that cannot be encoded.

    `status` is the suggested SIP status: 400 for a malformed or hostile body, 415 for a root
    element gbgw does not handle (PROTOCOL.md §3.1), 500 for a local misconfiguration such as
    an unknown charset override.
    """

    status: int
    reason: str

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"ManscdpError({self.reason!r}, status={self.status})"
