from django.urls import path

from jobs import views

# The original service's paths. Each also answers with a trailing slash
# (those aliases are left out of the OpenAPI schema).
routes = [
    ("generate", views.GenerateView, "generate"),
    ("job/<str:job_id>", views.JobView, "job"),
    ("job/<str:job_id>/cancel", views.CancelView, "cancel"),
    ("videos", views.VideosView, "videos"),
    ("download/<str:job_id>", views.DownloadView, "download"),
    ("poster/<str:job_id>", views.PosterView, "poster"),
    ("preview/<str:job_id>", views.PreviewView, "preview"),
    ("models", views.ModelsView, "models"),
    ("health", views.HealthView, "health"),
]

urlpatterns = [path(route, view.as_view(), name=name) for route, view, name in routes]
urlpatterns += [path(f"{route}/", view.as_view()) for route, view, name in routes]
urlpatterns += [
    path("schema", views.SchemaView.as_view(), name="schema"),
    path("docs", views.DocsView.as_view(url_name="schema"), name="docs"),
]
