from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.ChatView.as_view(), name="index"),
    path("c/<int:pk>/", views.ChatView.as_view(), name="conversation"),
]
