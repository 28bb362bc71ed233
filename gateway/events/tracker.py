"""The event builder: who the visitor is, what the request was, and the envelope.

Visitor and session ids come from first-party cookies the gateway sets itself. With
``tracking.honor_dnt``, a request carrying ``DNT: 1`` or ``Sec-GPC: 1`` gets no cookie
and its event no IP or ids. With ``tracking.truncate_ip``, IPv4 addresses keep their /24
and IPv6 their /48 before the event leaves the gateway.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import __version__
from gateway.config import Cookie, Cookies, Tracking
from gateway.events.envelope import Event, RequestFacts, SegmentFields, build_event, uuid7
from gateway.events.segment import Message
from gateway.events.snowplow import SnowplowEvent
from gateway.experiments.cookie import parse as parse_assignments
from gateway.request.cookies import cookies_of
from gateway.request.cors import Cors
from gateway.request.info import INFO

if TYPE_CHECKING:
    from gateway.enrich.enricher import Added, Enricher

# An id cookie that does not look like one of ours is replaced, never echoed back.
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(slots=True)  # not frozen: built per request (see envelope.RequestFacts)
class Identity:
    anonymous_id: str | None
    session_id: str | None
    new_visitor: bool
    private: bool
    user_id: str | None = None
    from_client: bool = False  # the client named itself: no cookie is set
    new_session: bool = False  # the session id was minted for this request


# A client's own id: a UUID (any version), as tracker clients mint them.
_CLIENT_ID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def event_name(properties: dict[str, Any], default: str = "") -> str:
    """The name a tracker call gives its event: ``ename``, else ``event``."""
    return str(properties.get("ename") or properties.get("event") or default)


def client_ids(properties: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """The ``vid``, ``sid`` and ``uid`` a tracker client sent, each only if it is a UUID
    (a malformed one stays in the properties, as sent, but identifies nobody)."""
    if not properties:
        return None, None, None
    found = []
    for key in ("vid", "sid", "uid"):
        value = properties.get(key)
        found.append(value if isinstance(value, str) and _CLIENT_ID.fullmatch(value) else None)
    return found[0], found[1], found[2]


def truncate_ip(ip: str) -> str:
    """IPv4 to its /24, IPv6 to its /48: enough for geography, not for a person."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def cookie_parts(cookies: Cookies, cookie: Cookie) -> tuple[str, str]:
    """``name=`` and the attributes after the value, as RFC 6265 §4.1 writes them."""
    attrs = [f"Max-Age={cookie.max_age}", f"Path={cookies.path}"]
    if cookies.domain:
        attrs.append(f"Domain={cookies.domain}")
    attrs.append(f"SameSite={cookies.same_site}")
    if cookies.secure or cookies.same_site == "None":  # SameSite=None requires Secure
        attrs.append("Secure")
    if cookies.http_only:
        attrs.append("HttpOnly")
    return f"{cookie.name}=", "; " + "; ".join(attrs)


_PUBLIC = Identity(None, None, new_visitor=False, private=False)  # Segment calls: no DNT


class Tracker:
    """Builds events for requests: visitor identity, cookies, request facts, envelope."""

    def __init__(
        self, config: Tracking, enricher: Enricher | None = None, *, experiments: bool = False
    ) -> None:
        self.config = config
        self.enricher = enricher  # tracking.enrich, when any step is on
        self.experiments = experiments  # events carry assignments (config.experiments)
        self.node = config.node or socket.gethostname()
        self.cors = Cors(config.cors)
        cookies = config.cookies
        self._visitor_cookie, self._visitor_attrs = cookie_parts(cookies, cookies.visitor)
        self._session_cookie, self._session_attrs = cookie_parts(cookies, cookies.session)
        readable = cookies.model_copy(update={"http_only": False})
        self._experiments_cookie, self._experiments_attrs = cookie_parts(
            readable, cookies.experiments
        )
        self._experiments_name = cookies.experiments.name + "="

    def identify(
        self,
        request: web.BaseRequest,
        properties: dict[str, Any] | None = None,
        *,
        mint: bool = True,
    ) -> Identity:
        """Who the visitor is: the ids a tracker client sent (``vid``, ``sid``, ``uid``
        in ``properties``) first, else the cookies; missing cookie ids are minted (to be
        set) unless ``mint`` is off, as for requests whose response has already gone out
        or server-side calls. DNT/GPC, when honoured, wins over all of them."""
        config = self.config
        if config.honor_dnt and (
            request.headers.get("DNT") == "1" or request.headers.get("Sec-GPC") == "1"
        ):
            return Identity(None, None, new_visitor=False, private=True)
        visitor_id, session_id, user_id = client_ids(properties)
        if visitor_id or session_id or user_id:
            return Identity(visitor_id, session_id, False, False, user_id, from_client=True)
        cookies = config.cookies
        # No Cookie header, no parsing (aiohttp's cookie parser is not cheap).
        jar = cookies_of(request)
        visitor = jar.get(cookies.visitor.name, "")
        session = jar.get(cookies.session.name, "")
        new_visitor = not _ID.fullmatch(visitor)
        new_session = not _ID.fullmatch(session)
        if not mint:
            return Identity(
                None if new_visitor else visitor, None if new_session else session, False, False
            )
        return Identity(
            anonymous_id=uuid7() if new_visitor else visitor,
            session_id=uuid7() if new_session else session,
            new_visitor=new_visitor,
            private=False,
            new_session=new_session,
        )

    def expire_cookies(self, response: web.StreamResponse) -> None:
        """Both id cookies, expired: the browser drops them (RFC 6265 §5.3, Max-Age=0)."""
        for name, attrs in (
            (self._visitor_cookie, self._visitor_attrs),
            (self._session_cookie, self._session_attrs),
        ):
            expired = re.sub(r"Max-Age=\d+", "Max-Age=0", attrs)
            response.headers.add("Set-Cookie", name + expired)

    def set_cookies(self, response: web.StreamResponse, identity: Identity) -> None:
        """Visitor cookie when new; session cookie every time (sliding expiry); none for
        a client that sent its own ids."""
        for value in self.cookie_values(identity):
            response.headers.add("Set-Cookie", value)

    def cookie_values(self, identity: Identity, *, minted_only: bool = False) -> list[str]:
        """The Set-Cookie values :meth:`set_cookies` adds (for a response not made yet);
        ``minted_only``: only ids minted for this request (no sliding session refresh)."""
        if identity.private or identity.from_client or not self.config.cookies.enabled:
            return []
        if minted_only and not (identity.new_visitor or identity.new_session):
            return []
        # Values are our own ids (or ones we read back, of cookie-safe characters), so the
        # header is assembled from attributes rendered once: http.cookies is slow per call.
        values = []
        if identity.new_visitor and identity.anonymous_id:
            values.append(self._visitor_cookie + identity.anonymous_id + self._visitor_attrs)
        if identity.session_id:
            values.append(self._session_cookie + identity.session_id + self._session_attrs)
        return values

    def experiments_cookie(self, value: str) -> str:
        """The Set-Cookie value of the experiments cookie: readable by the page's
        JavaScript (never HttpOnly), otherwise scoped like the id cookies."""
        return self._experiments_cookie + value + self._experiments_attrs

    def experiments_of(self, request: web.BaseRequest) -> dict[str, str] | None:
        """The visitor's experiment assignments: what this request decided, else what
        their cookie says; None when there are none (the envelope leaves it out)."""
        info = request.get(INFO)
        if info is not None and info.experiments is not None:
            return info.experiments or None
        cookie = request.headers.get("Cookie")
        if cookie is None or self._experiments_name not in cookie:
            return None
        return parse_assignments(cookies_of(request).get(self.config.cookies.experiments.name, ""))

    def facts(self, request: web.BaseRequest, client_ip: str, identity: Identity) -> RequestFacts:
        ip: str | None = client_ip
        if identity.private:
            ip = None
        elif self.config.truncate_ip and self.enricher is None:
            ip = truncate_ip(client_ip)  # with enrichment: looked up first, then masked
        return RequestFacts(
            ip=ip,
            method=request.method,
            host=request.host,
            path=request.path,
            query=request.raw_path.partition("?")[2],  # as sent, still percent-encoded
            user_agent=request.headers.get("User-Agent", ""),
            referer=request.headers.get("Referer", ""),
            trace_id=_trace_id(request),
            headers=request.headers if self.enricher is not None else None,
            experiments=self.experiments_of(request) if self.experiments else None,
        )

    def segment_facts(self, request: web.BaseRequest, client_ip: str) -> RequestFacts:
        """The request facts of a Segment request, shared by every call of a batch."""
        return self.facts(request, client_ip, _PUBLIC)

    def segment_event(
        self,
        request: web.BaseRequest,
        client_ip: str,
        message: Message,
        received_at: float,
        facts: RequestFacts | None = None,
    ) -> Event:
        """A Segment call: ids from the message, not from cookies."""
        facts = facts or self.segment_facts(request, client_ip)
        return build_event(
            event_type=message.event_type,
            event_name=message.event_name,
            anonymous_id=message.anonymous_id,
            user_id=message.user_id,
            session_id=None,
            request=facts,
            node=self.node,
            version=__version__,
            properties=message.properties,
            received_at=received_at,
            segment=message.segment,
            source="segment",
            added=self._enrich(
                "segment", message.event_type, message.event_name, facts,
                message.anonymous_id, message.user_id, message.properties, message.segment,
            ),
        )  # fmt: skip

    def snowplow_event(
        self, facts: RequestFacts, event: SnowplowEvent, received_at: float
    ) -> Event:
        """A Snowplow tracker's event: ids from its parameters and the network cookie."""
        return build_event(
            event_type=event.event_type,
            event_name=event.event_name,
            anonymous_id=event.anonymous_id,
            user_id=event.user_id,
            session_id=event.session_id,
            request=facts,
            node=self.node,
            version=__version__,
            properties=event.properties,
            received_at=received_at,
            segment=event.fields,
            source="snowplow",
            added=self._enrich(
                "snowplow", event.event_type, event.event_name, facts,
                event.anonymous_id, event.user_id, event.properties, event.fields,
            ),
        )  # fmt: skip

    def event(
        self,
        request: web.BaseRequest,
        client_ip: str,
        identity: Identity,
        *,
        event_type: str,
        event_name: str = "",
        properties: dict[str, Any] | None = None,
        status: int | None = None,
        duration_ms: float | None = None,
    ) -> Event:
        facts = self.facts(request, client_ip, identity)
        # The tracker's own calls are "track" events; pixels, redirects and tracked
        # requests are named by their type.
        source = "tracker" if event_type == "track" else event_type
        return build_event(
            event_type=event_type,
            event_name=event_name,
            anonymous_id=identity.anonymous_id,
            user_id=identity.user_id,
            session_id=identity.session_id,
            request=facts,
            node=self.node,
            version=__version__,
            properties=properties,
            status=status,
            duration_ms=duration_ms,
            received_at=time.time(),
            source=source,
            added=self._enrich(
                source, event_type, event_name, facts, identity.anonymous_id,
                identity.user_id, properties, None,
            ),
        )  # fmt: skip

    def _enrich(
        self,
        source: str,
        event_type: str,
        event_name: str,
        facts: RequestFacts,
        anonymous_id: str | None,
        user_id: str | None,
        properties: dict[str, Any] | None,
        fields: SegmentFields | None,
    ) -> Added | None:
        """What ``tracking.enrich`` makes of an event; None when it is off."""
        if self.enricher is None:
            return None
        members = {
            "user_id": user_id, "anonymous_id": anonymous_id, "ip": facts.ip,
            "properties": properties, "traits": fields.traits if fields else None,
            "context": fields.context if fields else None,
            "extra": fields.extra if fields else None,
            "group_id": fields.group_id if fields else None,
            "previous_id": fields.previous_id if fields else None,
        }  # fmt: skip
        return self.enricher.apply(source, event_type, event_name, facts, members)


def _trace_id(request: web.BaseRequest) -> str | None:
    info = request.get(INFO)
    return info.trace.trace_id if info is not None and info.trace is not None else None
