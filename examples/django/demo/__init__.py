"""The demo project: Django, PostgreSQL, a celery worker, deployed by deploytool (README, "Deploying a Django app")."""

from demo.celery import app as celery_app

__all__ = ["celery_app"]
