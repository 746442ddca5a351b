from django_q.models import OrmQ


def test_it_lists_the_served_models_with_defaults_and_bounds(api, settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "cogvideox-2b", "wan2.1-t2v-1.3b"]

    body = api.get("/api/v1/models").json()

    assert body["default"] == "tiny-random"
    assert [model["name"] for model in body["models"]] == ["tiny-random", "cogvideox-2b", "wan2.1-t2v-1.3b"]
    wan = body["models"][2]
    assert wan["pipeline"] == "WanPipeline"
    assert wan["defaults"] == {
        "width": 832, "height": 480, "num_frames": 81, "num_inference_steps": 50, "guidance_scale": 5.0, "fps": 16,
    }
    assert wan["bounds"]["width"] == {"min": 256, "max": 832, "multiple_of": 16}
    assert wan["bounds"]["num_frames"] == {"min": 1, "max": 81}


def test_it_does_not_reveal_where_weights_live(api, settings):
    settings.VIDEOGEN_MODELS = ["tiny-random", "cogvideox-2b"]
    settings.VIDEOGEN_MODEL_SOURCES = {"COGVIDEOX_2B": "/srv/private/weights"}

    assert "/srv/private" not in api.get("/api/v1/models").content.decode()


def test_a_job_gets_its_models_defaults(api, db, settings, django_capture_on_commit_callbacks):
    settings.VIDEOGEN_MODELS = ["tiny-random", "cogvideox-5b"]

    with django_capture_on_commit_callbacks(execute=True):
        body = api.post("/api/v1/generate", {"user_id": "u", "prompt": "p", "model": "cogvideox-5b"}, format="json").json()

    assert (body["num_frames"], body["fps"], body["guidance_scale"]) == (49, 8, 6.0)
    assert (body["width"], body["height"]) == (720, 480)


def test_a_pinned_models_jobs_go_to_its_queue(api, db, settings, django_capture_on_commit_callbacks):
    settings.VIDEOGEN_MODELS = ["tiny-random", "tiny-random-wan"]
    settings.VIDEOGEN_MODEL_QUEUES = {"tiny-random-wan": "wan-workers"}

    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/generate", {"user_id": "u", "prompt": "p", "model": "tiny-random-wan"}, format="json")
        api.post("/api/v1/generate", {"user_id": "u", "prompt": "p"}, format="json")

    assert sorted(OrmQ.objects.values_list("key", flat=True)) == ["videogen", "wan-workers"]
