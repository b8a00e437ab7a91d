"""HTTP URLs: Django's ordinary views, served by the same ASGI application."""

from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index),
    path("rooms/<slug:room_name>/announce", views.announce),
]
