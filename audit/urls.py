from django.urls import path

from audit import views

app_name = "analytics"

urlpatterns = [
    path("", views.usage, name="usage"),
    path("<slug:table>.csv", views.usage_csv, name="csv"),
]
