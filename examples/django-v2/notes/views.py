"""The demo's pages: ``/`` answers JSON with the release serving it and what the database holds."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from demo.release import release_info
from notes.models import Note
from notes.tasks import record_release


def index(request: HttpRequest) -> JsonResponse:
    latest = list(Note.objects.order_by("-id").values("text", "author")[:5])
    authors = sorted(set(Note.objects.exclude(author="").values_list("author", flat=True)))
    return JsonResponse({**release_info(), "notes": Note.objects.count(), "latest": latest, "authors": authors})


@csrf_exempt
@require_POST
def add_note(request: HttpRequest) -> JsonResponse:
    note = Note.objects.create(text=request.POST.get("text", "")[:200], author=request.POST.get("author", "")[:100])
    return JsonResponse({"id": note.id})


def worker(request: HttpRequest) -> JsonResponse:
    """Send a worker the record_release task and answer what it returned: which release and code ran it."""
    return JsonResponse(record_release.delay().get(timeout=30))
