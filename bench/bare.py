"""
The baseline for bench/api.py: our settings (middleware, database, auth mode
as the environment says) with one bare Django view, so a figure against it
is what our view adds. Both the settings module and the URLconf:
DJANGO_SETTINGS_MODULE=bench.bare.
"""

from django.http import JsonResponse
from django.urls import path

from videogen.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare"


def bare(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("bare", bare), path("health", bare)]
