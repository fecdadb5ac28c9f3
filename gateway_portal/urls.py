from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
    path("analytics/", include("audit.urls")),
    path("teams/", include("gateway_portal.team_pages")),
    path("accounts/", include("gateway_portal.accounts")),
    path("", include("gateway_portal.team_limits")),
    path("admin/", admin.site.urls),
]
