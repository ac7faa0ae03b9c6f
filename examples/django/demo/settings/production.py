"""Production settings: DJANGO_SETTINGS_MODULE=demo.settings.production (hosts.yml's env)."""

from demo.settings.base import *  # noqa: F403

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
