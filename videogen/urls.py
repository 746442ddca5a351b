from django.contrib import admin
from django.urls import include, path

from jobs.http import json_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("jobs.urls")),
]


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_error(404, "Not found.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_error(500, "Internal server error.")
    from django.views.defaults import server_error as html_server_error

    return html_server_error(request)


handler404 = not_found
handler500 = server_error
