"""WSGI entry point: ``gunicorn demo.wsgi:application`` (etc-mock/gunicorn/)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings.production")
application = get_wsgi_application()
