from django.apps import AppConfig


class GatewayPortalConfig(AppConfig):
    name = "gateway_portal"

    def ready(self):
        from gateway_portal import checks  # noqa: F401  registers the settings checks
