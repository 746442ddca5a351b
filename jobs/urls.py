from django.urls import re_path

from jobs import views

# Paths as the original service had them, with or without a trailing slash.
urlpatterns = [
    re_path(r"^generate/?$", views.GenerateView.as_view(), name="generate"),
    re_path(r"^job/(?P<job_id>[^/]+)/?$", views.JobView.as_view(), name="job"),
    re_path(r"^job/(?P<job_id>[^/]+)/cancel/?$", views.CancelView.as_view(), name="cancel"),
    re_path(r"^videos/?$", views.VideosView.as_view(), name="videos"),
    re_path(r"^download/(?P<job_id>[^/]+)/?$", views.DownloadView.as_view(), name="download"),
    re_path(r"^poster/(?P<job_id>[^/]+)/?$", views.PosterView.as_view(), name="poster"),
    re_path(r"^preview/(?P<job_id>[^/]+)/?$", views.PreviewView.as_view(), name="preview"),
    re_path(r"^models/?$", views.ModelsView.as_view(), name="models"),
    re_path(r"^health/?$", views.HealthView.as_view(), name="health"),
]
