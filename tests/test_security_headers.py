"""Security headers on everything the portal serves, static files included (through the real ASGI
application, which serves /static/ itself before Django's middleware)."""

import httpx
import pytest

pytestmark = pytest.mark.django_db


async def _get(path):
    from gateway_portal.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        return await client.get(path)


@pytest.mark.parametrize("path", ["/static/chat/page.js", "/static/chat/chat.css", "/accounts/login/"])
async def test_the_browser_is_told_not_to_guess_content_types(path):
    response = await _get(path)
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


async def test_a_missing_static_file_is_a_404_with_the_same_headers():
    response = await _get("/static/chat/nothing-here.js")
    assert response.status_code == 404
    assert response.headers["X-Content-Type-Options"] == "nosniff"
