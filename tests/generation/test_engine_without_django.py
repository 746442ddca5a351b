"""The engine (catalogue, images, pipelines, encoding) is plain Python: usable with no Django settings at all."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys

from generation.registry import BUILTIN_MODELS, catalogue, get_spec

assert not any(name == "django" or name.startswith("django.") for name in sys.modules), "the catalogue imported Django"

from generation.images import prepare_image

assert not any(name == "django" or name.startswith("django.") for name in sys.modules), "images imported Django"
assert "torch" not in sys.modules, "images imported torch"
assert get_spec("tiny-random-i2v").modes == ("image-to-video",)

specs = catalogue({"cogvideox-2b": {"source": "/models/cogvideox"}})
spec = get_spec("cogvideox-2b", specs)
assert spec.source == "/models/cogvideox" and BUILTIN_MODELS["cogvideox-2b"].source == "THUDM/CogVideoX-2b"
assert get_spec("wan2.1-t2v-1.3b").valid_frame_count(36) == 37
plan = spec.memory_plan(49, 720, 480, gpu_memory_gib=80)
assert plan.fits and not plan.cpu_offload

import generation.encoding
import generation.pipelines

from django.conf import settings

assert not settings.configured
print("ok")
"""


def test_the_engine_imports_and_uses_its_catalogue_without_django_settings():
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
