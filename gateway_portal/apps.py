from django.apps import AppConfig


class GatewayPortalConfig(AppConfig):
    name = "gateway_portal"

    def ready(self):
        from gateway_portal import auth_audit, checks  # noqa: F401  checks registers the settings checks

        auth_audit.connect()
