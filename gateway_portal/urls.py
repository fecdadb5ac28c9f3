from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
    path("", include("chat.api.urls")),
    path("analytics/", include("audit.urls")),
    path("accounts/", include("gateway_portal.accounts")),
    path("admin/", admin.site.urls),
]
