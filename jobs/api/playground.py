"""
The playground at `/`: one page whose script uses the public API only
(jobs/static/playground/playground.js), so everything it does a client can do.
"""

from dataclasses import dataclass

from django.views.generic import TemplateView


@dataclass(frozen=True)
class FormField:
    id: str  # the element's id, which the script finds it by
    name: str  # the request field it fills
    label: str
    not_extend: bool = False  # hidden while extending a job: the source decides it


NUMBER_FIELDS = [
    FormField("width", "width", "Width", not_extend=True),
    FormField("height", "height", "Height", not_extend=True),
    FormField("num-frames", "num_frames", "Frames"),
    FormField("num-inference-steps", "num_inference_steps", "Steps"),
]
IMAGE_FIELDS = [FormField("image", "image", "First frame"), FormField("last-image", "last_image", "Last frame")]


class PlaygroundView(TemplateView):
    template_name = "playground/index.html"
    http_method_names = ["get", "head"]
    extra_context = {"number_fields": NUMBER_FIELDS, "image_fields": IMAGE_FIELDS}
