from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.ChatView.as_view(), name="index"),
    path("c/<int:pk>/", views.ChatView.as_view(), name="conversation"),
    path("c/<int:pk>/share/", views.ShareView.as_view(), name="share"),
    path("team/", views.ChooseTeamView.as_view(), name="choose_team"),
]
