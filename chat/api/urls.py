from django.urls import path, re_path

from chat.api import pages, views

app_name = "api"

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="chat_completions"),
    path("v1/models", views.models, name="models"),
    re_path(r"^v1/(?P<rest>.*)$", views.not_found),
    path("settings/keys/", pages.KeysView.as_view(), name="keys"),
    path("settings/keys/<int:pk>/revoke/", pages.RevokeKeyView.as_view(), name="revoke"),
]
