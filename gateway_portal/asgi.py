"""ASGI entry point: HTTP to Django (static files included), websockets to the chat consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_portal.settings")
django_asgi_app = get_asgi_application()  # first, so the app registry is ready for the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from chat.consumers import ChatConsumer  # noqa: E402
from gateway_portal.security import StaticFilesWithSecurityHeaders  # noqa: E402
from gateway_portal.websocket_origin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The portal serves its own static files: a self-hosted single process needs no web server
        # in front (a deployment with one can still collectstatic and serve /static/ itself). The
        # files get the security headers Django's middleware gives pages (security.py).
        "http": StaticFilesWithSecurityHeaders(django_asgi_app),
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/chat/", ChatConsumer.as_asgi())]))
        ),
    }
)
