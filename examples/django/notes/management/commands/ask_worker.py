"""``python manage.py ask_worker``: send the worker a task and print, as JSON, which release ran it.

For example ``fab run --hosts web1 -- python manage.py ask_worker`` after a deploy: the worker must answer from
the release just deployed.
"""

import json

from django.core.management.base import BaseCommand

from notes.tasks import record_release


class Command(BaseCommand):
    help = "Run the record_release task on a worker and print its answer (JSON)."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, **options):
        answer = record_release.delay().get(timeout=options["timeout"])
        self.stdout.write(json.dumps(answer))
