"""Celery tasks, run by the worker (``{{ app }}-worker`` under supervisord)."""

from celery import shared_task

from demo.release import release_info
from notes.models import Note


@shared_task
def record_release() -> dict:
    """Record, as a note, which release of the code ran this task; return that release's facts."""
    info = release_info()
    Note.objects.create(text=f"task ran by {info['code']} of release {info['release']}")
    return info
