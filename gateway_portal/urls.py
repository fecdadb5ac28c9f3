from django.contrib import admin
from django.urls import include, path

from gateway_portal import health, metrics

urlpatterns = [
    path("", include("chat.urls")),
    path("", include("chat.api.urls")),
    path("analytics/", include("audit.urls")),
    path("teams/", include("gateway_portal.team_pages")),
    path("accounts/", include("gateway_portal.accounts")),
    path("", include("gateway_portal.team_limits")),
    path("admin/", admin.site.urls),
    # For the monitoring and the load balancer (README.md "Metrics and health").
    path("metrics", metrics.metrics_view, name="metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
