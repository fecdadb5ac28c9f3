"""Websockets are accepted only from the portal's own pages: the same origin, scheme and port too.

A websocket is not covered by CSRF protection and a browser sends the session cookie with it from
any page, so the Origin header is what stops another site (or another port of the same host, or
plain http to an https portal) from chatting as the person. Channels' AllowedHostsOriginValidator
compares the host only; this compares scheme, host and port with the origin the portal itself is
served from (the Host header, which Django's ALLOWED_HOSTS must accept, and the connection's
scheme, or SECURE_PROXY_SSL_HEADER behind a proxy), and accepts CSRF_TRUSTED_ORIGINS as well,
as Django does for forms. A handshake without an Origin header is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalised(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, with the scheme's default port filled in."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def own_origin(scope) -> tuple[str, str, int] | None:
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        asgi_name = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        forwarded = _header(scope, asgi_name)
        if forwarded is not None:
            scheme = "https" if forwarded.split(",")[0].strip() == secure_value else "http"
    return normalised(f"{scheme}://{host}")


def is_allowed(scope) -> bool:
    origin = _header(scope, b"origin")
    claimed = normalised(origin) if origin else None
    if claimed is None:
        return False
    if claimed == own_origin(scope):
        return True
    return any(claimed == normalised(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS)


class SameOriginValidator:
    """ASGI middleware: refuses the handshake (HTTP 403) of a websocket from any other origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not is_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
