"""
The playground at `/`: one page whose script uses the public API only
(jobs/static/playground/playground.js), so everything it does a client can do.
"""

from django.views.generic import TemplateView


class PlaygroundView(TemplateView):
    template_name = "playground/index.html"
    http_method_names = ["get", "head"]
