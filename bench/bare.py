"""
The baseline for bench/api.py: our settings (middleware, database, auth mode
as the environment says) with one bare Django view, so a figure against it
is what our view adds; /bare-query makes one `SELECT 1` as well, the floor
of any view that reads the database. Both the settings module and the URLconf:
DJANGO_SETTINGS_MODULE=bench.bare.
"""

from django.db import connection
from django.http import JsonResponse
from django.urls import path

from videogen.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare"


def bare(request):
    return JsonResponse({"ok": True})


def bare_query(request):
    # The floor of any view that reads the database: one round trip.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return JsonResponse({"ok": True})


urlpatterns = [path("bare", bare), path("bare-query", bare_query), path("health", bare)]
