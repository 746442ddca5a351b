from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from jobs.api import views
from jobs.api.http import JsonOptionsNegotiation

job_actions = views.JobViewSet.as_view

# The original service's paths, each mapped to the job viewset's actions
# (`name`: what an OPTIONS answer calls each). Each also answers with a
# trailing slash (those aliases are left out of the OpenAPI schema).
routes = [
    ("generate", job_actions({"post": "create"}, name="Generate"), "generate"),
    ("job/<str:job_id>", job_actions({"get": "retrieve", "delete": "destroy"}), "job"),
    ("job/<str:job_id>/cancel", job_actions({"post": "cancel"}, name="Cancel"), "cancel"),
    ("job/<str:job_id>/events", job_actions({"get": "events"}, name="Events"), "events"),
    ("videos", job_actions({"get": "list"}, name="Videos"), "videos"),
    ("download/<str:job_id>", job_actions({"get": "download"}, name="Download"), "download"),
    ("poster/<str:job_id>", job_actions({"get": "poster"}, name="Poster"), "poster"),
    ("preview/<str:job_id>", job_actions({"get": "preview"}, name="Preview"), "preview"),
    ("image/<str:job_id>", job_actions({"get": "image"}, name="Image"), "image"),
    ("last_image/<str:job_id>", job_actions({"get": "last_image"}, name="Last image"), "last_image"),
    ("live-preview/<str:job_id>", job_actions({"get": "live_preview"}, name="Live preview"), "live-preview"),
    ("models", views.ModelsView.as_view(), "models"),
    ("health", views.HealthView.as_view(), "health"),
]

urlpatterns = [path(route, view, name=name) for route, view, name in routes]
urlpatterns += [path(f"{route}/", view) for route, view, name in routes]
urlpatterns += [
    path("schema", SpectacularAPIView.as_view(content_negotiation_class=JsonOptionsNegotiation), name="schema"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", content_negotiation_class=JsonOptionsNegotiation),
        name="docs",
    ),
]
