"""SIP dialogs (RFC 3261 §12), sans-I/O: the state two INVITE peers share after a 2xx.

A dialog is identified by Call-ID and the two tags. This module builds the in-dialog requests
a media session needs (ACK for the 2xx, BYE, INFO) with the right Request-URI (the peer's
Contact), tags, Call-ID, CSeq and route set, and matches incoming in-dialog requests. It does
not send anything: the endpoint does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sip.errors import SipParseError
from sip.message import Request, Response
from sip.uri import NameAddr, SipUri

__all__ = ["Dialog", "DialogError"]


class DialogError(ValueError):
    """A response or request that cannot form or continue a dialog."""


@dataclass(slots=True)
class Dialog:
    """One confirmed dialog; ``local``/``remote`` are From/To seen from our side."""

    call_id: str
    local: NameAddr  # with our tag
    remote: NameAddr  # with their tag
    remote_target: SipUri  # the peer's Contact: Request-URI of in-dialog requests
    local_cseq: int
    invite_cseq: int
    route_set: tuple[str, ...] = ()
    remote_cseq: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local.tag or "", self.remote.tag or "")

    @classmethod
    def from_uac(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a 2xx to our INVITE creates (RFC 3261 §12.1.2)."""
        if response.status // 100 != 2:
            raise DialogError("only a 2xx creates a dialog")
        try:
            to = response.to
            contacts = response.contact
        except SipParseError as exc:
            raise DialogError(str(exc)) from None
        if to.tag is None:
            raise DialogError("2xx without a To tag")
        target = contacts[0].uri if contacts else invite.uri
        routes = tuple(reversed(response.headers.get_all("Record-Route")))
        return cls(
            call_id=invite.call_id,
            local=invite.from_,
            remote=to,
            remote_target=target,
            local_cseq=invite.cseq.seq,
            invite_cseq=invite.cseq.seq,
            route_set=routes,
        )

    @classmethod
    def from_uas(cls, invite: Request, local_tag: str, contact: SipUri) -> Dialog:
        """The dialog our 2xx to an incoming INVITE creates (RFC 3261 §12.1.1)."""
        try:
            remote_contacts = invite.contact
            frm = invite.from_
        except SipParseError as exc:
            raise DialogError(str(exc)) from None
        target = remote_contacts[0].uri if remote_contacts else frm.uri
        d = cls(
            call_id=invite.call_id,
            local=invite.to.with_tag(local_tag),
            remote=frm,
            remote_target=target,
            local_cseq=0,
            invite_cseq=invite.cseq.seq,
            route_set=tuple(invite.headers.get_all("Record-Route")),
            remote_cseq=invite.cseq.seq,
        )
        d.extra["contact"] = str(contact)
        return d

    def matches(self, msg: Request | Response) -> bool:
        """Whether an incoming request belongs to this dialog (Call-ID and both tags)."""
        try:
            if msg.call_id != self.call_id:
                return False
            return msg.from_.tag == self.remote.tag and msg.to.tag == self.local.tag
        except SipParseError:
            return False

    def _request(
        self,
        method: str,
        cseq: int,
        via: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        h: list[tuple[str, str]] = [("Via", via)]
        h += [("Route", r) for r in self.route_set]
        h += [
            ("From", str(self.local)),
            ("To", str(self.remote)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        if content_type is not None:
            h.append(("Content-Type", content_type))
        return Request(method, self.remote_target, h, body)

    def ack(self, via: str) -> Request:
        """The ACK for the 2xx (CSeq number of the INVITE; RFC 3261 §13.2.2.4)."""
        return self._request("ACK", self.invite_cseq, via)

    def request(
        self, method: str, via: str, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """A new in-dialog request (BYE, INFO ...) with the next local CSeq."""
        self.local_cseq += 1
        return self._request(method, self.local_cseq, via, body=body, content_type=content_type)
