from django.urls import path

from notes import views

urlpatterns = [path("", views.index), path("notes/", views.add_note), path("worker/", views.worker)]
