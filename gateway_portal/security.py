"""Security headers: a Content-Security-Policy on every response (Django 5.2 has none built in),
and the same headers on the static files the portal serves itself.

Model output is untrusted. It is sanitised before it reaches the DOM (DOMPurify), and this header
is the second wall: even if some markup slipped through, the browser would run no inline or
foreign script, load no foreign image (tracking pixels), and talk to no other host.
"""

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.middleware.security import SecurityMiddleware
from django.utils.decorators import sync_and_async_middleware

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # The admin and a few widgets set inline style attributes; styles cannot run code.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)


@sync_and_async_middleware
def content_security_policy(get_response):
    # Both flavours, so an async view (the API) is not pushed through a thread for this header.
    if iscoroutinefunction(get_response):

        async def middleware(request):
            response = await get_response(request)
            response.setdefault("Content-Security-Policy", settings.PORTAL_CONTENT_SECURITY_POLICY)
            return response

    else:

        def middleware(request):
            response = get_response(request)
            response.setdefault("Content-Security-Policy", settings.PORTAL_CONTENT_SECURITY_POLICY)
            return response

    return middleware


class StaticFilesWithSecurityHeaders(ASGIStaticFilesHandler):
    """/static/ as Django serves it, plus the headers its middleware gives every other response.

    The static handler answers before Django's middleware runs, so without this a script or style
    sheet came without `X-Content-Type-Options: nosniff` (a browser may then guess a type and run
    an upload as script) and without the policy above.
    """

    _security = SecurityMiddleware(lambda request: None)

    async def get_response_async(self, request):
        response = await super().get_response_async(request)
        response = self._security.process_response(request, response)
        response.setdefault("Content-Security-Policy", settings.PORTAL_CONTENT_SECURITY_POLICY)
        return response
