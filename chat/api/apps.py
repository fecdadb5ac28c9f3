from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The API for programs (/v1/...) and the personal keys that open it."""

    name = "chat.api"
    label = "api"
    verbose_name = "API keys"
    default_auto_field = "django.db.models.BigAutoField"
