"""Celery tasks, run by the worker (``{{ app }}-worker`` under supervisord)."""

from celery import shared_task

from demo.release import release_info
from notes.models import Note


@shared_task
def record_release() -> dict:
    """Record, as a note by the worker, which release of the code ran this task; return that release's facts."""
    info = release_info()
    text = f"task ran by {info['code']} of release {info['release']}"
    Note.objects.create(text=text, author=f"worker {info['code']}")
    return info
