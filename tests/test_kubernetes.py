"""
docker/k8s/ checked without a cluster: every overlay rendered by kubectl's
kustomize, every built-in object loaded strictly into the official client's
typed models, the KEDA and prometheus-operator objects validated against
their published schemas (docker/k8s/schemas/), and the manifests checked
against the code they run: settings, URLs, gunicorn, the commands of `make
run` and compose, and the measured stop time (docs/kubernetes.md).
"""

import base64
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import uuid
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes import client

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "docker" / "k8s"
OVERLAYS = ("single-node", "production")
# Each overlay alone, and with the optional components as docs/kubernetes.md adds them.
VARIANTS = [
    ("single-node", ()),
    ("production", ()),
    ("single-node", ("model-queue", "scale-to-zero")),
    ("production", ("model-queue", "scale-to-zero")),
]
APP_IMAGE = "videogen"
# What the kubelet and Prometheus would see for a pod; any address works.
POD_IP = "10.42.0.7"

# Built-in kinds, as the client names their models. A kind not listed fails
# the test, so a new one is checked, never skipped.
BUILT_IN = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
}
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.yaml",
}

# The original service's k3s deployment, object by object, and what stands
# for each in the single-node overlay (docs/kubernetes.md has the same table).
ORIGINAL_K3S = {
    "API": [("Deployment", "videogen-api")],
    "worker": [("Deployment", "videogen-worker")],
    "Redis": [("Deployment", "videogen-redis")],
    "PostgreSQL": [("Deployment", "videogen-postgres")],
    "PVC": [
        ("PersistentVolumeClaim", "videogen-postgres"),
        ("PersistentVolumeClaim", "videogen-minio"),
        ("PersistentVolumeClaim", "videogen-huggingface"),
    ],
    "ConfigMap": [("ConfigMap", "videogen")],
    "Secret": [("Secret", "videogen")],
}

# Read by something other than videogen/settings.py: django-q2 (Q_CLUSTER_NAME),
# or only a part of another variable's value (POD_IP).
ENV_READ_ELSEWHERE = {"Q_CLUSTER_NAME", "POD_IP"}


# --- Rendering ----------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed: these tests render docker/k8s/ with `kubectl kustomize` (install kubectl)")
    return path


@cache
def render(overlay: str, components: tuple[str, ...] = ()) -> tuple[dict, ...]:
    """The objects `kubectl apply -k` would send, for an overlay and the components added to it."""
    directory = K8S / "overlays" / overlay
    scratch = None
    if components:
        # A copy of the overlay next to it (its relative paths still hold) with
        # the components added, as a user adds them to their own overlay.
        scratch = K8S / "overlays" / f".test-{overlay}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(directory, scratch)
        with open(scratch / "kustomization.yaml", "a") as kustomization:
            kustomization.write("components:\n" + "".join(f"  - ../../components/{name}\n" for name in components))
        directory = scratch
    try:
        result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch)
    assert result.returncode == 0, f"kubectl kustomize {overlay} {components}: {result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def find(objects, kind: str, name: str) -> dict:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def of_kind(objects, kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_templates(objects) -> list[tuple[dict, dict]]:
    """(owner, pod spec) for every Deployment and Job."""
    return [(obj, obj["spec"]["template"]["spec"]) for obj in objects if obj["kind"] in ("Deployment", "Job")]


def runs_app(container: dict) -> bool:
    return container["image"].partition(":")[0].rpartition("/")[2] == APP_IMAGE


def app_containers(objects) -> list[tuple[dict, dict]]:
    """(owner, container) for every container, init containers included, that runs videogen's image."""
    return [
        (owner, container)
        for owner, spec in pod_templates(objects)
        for container in spec.get("initContainers", []) + spec["containers"]
        if runs_app(container)
    ]


def container(objects, deployment: str, name: str | None = None) -> dict:
    containers = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def worker_deployments(objects) -> list[dict]:
    return [
        obj for obj in of_kind(objects, "Deployment")
        if obj["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]


# --- Strict loading into the client's typed models ----------------------------

PRIMITIVES = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float)}


def strict_load(data, type_name: str, where: str):
    """
    `data` as the client's type `type_name`, refusing what its own
    deserializer lets through: keys the model does not know and values of
    the wrong primitive type. The models' constructors then refuse missing
    required fields and values outside their enums.
    """
    if type_name.startswith("list["):
        assert isinstance(data, list), f"{where}: a list expected, got {data!r}"
        return [strict_load(item, type_name[5:-1], f"{where}[{index}]") for index, item in enumerate(data)]
    if type_name.startswith(("dict(", "dict[")):
        assert isinstance(data, dict), f"{where}: a map expected, got {data!r}"
        value_type = type_name[5:-1].split(",", 1)[1].strip()
        return {key: strict_load(value, value_type, f"{where}.{key}") for key, value in data.items()}
    if type_name == "object":
        # IntOrString and free-form fields: any JSON value.
        return data
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(data, bool)), (
            f"{where}: {type_name} expected, got {type(data).__name__} {data!r}"
        )
        return data
    model = getattr(client, type_name)
    assert isinstance(data, dict), f"{where}: an object ({type_name}) expected, got {data!r}"
    attributes = {json_key: attribute for attribute, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(attributes))
    assert not unknown, f"{where}: {type_name} has no field {', '.join(unknown)}"
    values = {
        attributes[key]: strict_load(value, model.openapi_types[attributes[key]], f"{where}.{key}")
        for key, value in data.items()
    }
    try:
        return model(**values)
    except ValueError as exc:
        raise AssertionError(f"{where}: {exc}") from None


def load_built_in(obj: dict):
    key = (obj["apiVersion"], obj["kind"])
    assert key in BUILT_IN or key in CUSTOM, f"{key}: a kind these tests do not check; add it to BUILT_IN or CUSTOM"
    return strict_load(obj, BUILT_IN[key], f"{obj['kind']}/{obj['metadata']['name']}")


# --- Custom resources against their published schemas -------------------------


def closed(schema):
    """
    The schema with unknown fields refused, as the API server does under
    kubectl's strict field validation (it prunes them otherwise): every object
    with listed properties that neither keeps unknown fields nor allows
    additional ones gets additionalProperties: false.
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@cache
def crd_schema(file_name: str) -> dict:
    schema = yaml.safe_load((K8S / "schemas" / file_name).read_text())
    # metadata is the server's (checked below with V1ObjectMeta), not the CRD's.
    schema["properties"]["metadata"] = {"type": "object"}
    return closed(schema)


def validate_custom(obj: dict) -> None:
    schema = crd_schema(CUSTOM[(obj["apiVersion"], obj["kind"])])
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda error: list(error.path))
    assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
        f"{'.'.join(map(str, error.path))}: {error.message}" for error in errors
    )
    strict_load(obj["metadata"], "V1ObjectMeta", f"{obj['kind']}/{obj['metadata']['name']}.metadata")


# --- A container's environment, as the kubelet builds it ----------------------

DOCS = ROOT / "docs" / "kubernetes.md"


def documented_secrets() -> dict[str, dict[str, str]]:
    """The Secrets docs/kubernetes.md tells a production install to create: name -> key -> example value."""
    secrets = {}
    for line in DOCS.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("kubectl -n videogen create secret generic "):
            words = shlex.split(line)
            literals = [word.removeprefix("--from-literal=") for word in words if word.startswith("--from-literal=")]
            secrets[words[6]] = dict(literal.split("=", 1) for literal in literals)
    return secrets


def secret_data(objects, name: str) -> dict[str, str]:
    secrets = [obj for obj in objects if obj["kind"] == "Secret" and obj["metadata"]["name"] == name]
    if not secrets:
        # Production holds no Secret: the values are those the docs have you create.
        assert name in documented_secrets(), f"Secret {name} is neither rendered nor in docs/kubernetes.md's install"
        return documented_secrets()[name]
    (secret,) = secrets
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return data | secret.get("stringData", {})


def expand(value: str, env: dict[str, str]) -> str:
    # $(NAME) of a variable defined before it; $$ is a literal $; unknown names stay as written.
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def container_env(objects, spec: dict, pod_name: str = "videogen-pod-0") -> dict[str, str]:
    env = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= secret_data(objects, source["secretRef"]["name"])
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = {"status.podIP": POD_IP, "metadata.name": pod_name}[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[var["name"]] = secret_data(objects, source["secretKeyRef"]["name"])[source["secretKeyRef"]["key"]]
        else:
            ref = source["configMapKeyRef"]
            env[var["name"]] = find(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
    return env


def settings_with(env: dict[str, str], monkeypatch, tmp_path) -> dict:
    """videogen/settings.py evaluated afresh with only this environment (and local directories)."""
    for name in [name for name in os.environ if name.startswith(("VIDEOGEN_", "AWS_", "Q_CLUSTER"))]:
        monkeypatch.delenv(name)
    for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The image's directories (docker/Dockerfile) are not this machine's.
    monkeypatch.setenv("VIDEOGEN_DATA_DIR", str(tmp_path / "var"))
    if "PROMETHEUS_MULTIPROC_DIR" in env:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    return runpy.run_path(str(ROOT / "videogen" / "settings.py"))


# --- Rendering and loading ----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_lives_in_one_namespace(overlay):
    objects = render(overlay)
    assert find(objects, "Namespace", "videogen")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "videogen", f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join((v[0], *v[1])))
def test_every_built_in_object_loads_strictly_into_the_clients_typed_models(variant):
    objects = render(*variant)
    loaded = [load_built_in(obj) for obj in objects if (obj["apiVersion"], obj["kind"]) in BUILT_IN]
    assert len(loaded) == sum(1 for obj in objects if (obj["apiVersion"], obj["kind"]) not in CUSTOM)
    assert {type(model).__name__ for model in loaded} >= {"V1Deployment", "V1Service", "V1ConfigMap", "V1Job"}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join((v[0], *v[1])))
def test_every_scaledobject_and_servicemonitor_matches_its_published_schema(variant):
    objects = render(*variant)
    custom = [obj for obj in objects if (obj["apiVersion"], obj["kind"]) in CUSTOM]
    assert {obj["kind"] for obj in custom} == {"ScaledObject", "ServiceMonitor"}
    for obj in custom:
        validate_custom(obj)


def test_the_strict_load_refuses_an_unknown_field_a_wrong_type_and_a_missing_required_one():
    api = find(render("single-node"), "Deployment", "videogen-api")

    def changed(edit) -> dict:
        copy = json.loads(json.dumps(api))
        edit(copy)
        return copy

    probe = lambda obj: obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]  # noqa: E731
    with pytest.raises(AssertionError, match=r"V1HTTPGetAction has no field pth"):
        load_built_in(changed(lambda obj: probe(obj).update(pth="/health")))
    with pytest.raises(AssertionError, match=r"spec.revisionHistoryLimit: int expected, got str"):
        load_built_in(changed(lambda obj: obj["spec"].update(revisionHistoryLimit="5")))
    with pytest.raises(AssertionError, match=r"spec.paused: bool expected"):
        load_built_in(changed(lambda obj: obj["spec"].update(paused="false")))
    with pytest.raises(AssertionError, match=r"containers\[0\]: .*`name`"):
        load_built_in(changed(lambda obj: obj["spec"]["template"]["spec"]["containers"][0].pop("name")))


def test_the_schema_check_refuses_an_unknown_field_and_a_wrong_type():
    scaled = find(render("single-node"), "ScaledObject", "videogen-worker")
    with pytest.raises(AssertionError, match="minReplicaCount: '1' is not of type 'integer'"):
        validate_custom(scaled | {"spec": scaled["spec"] | {"minReplicaCount": "1"}})
    with pytest.raises(AssertionError, match="Additional properties are not allowed .'maxReplicas' was unexpected"):
        validate_custom(scaled | {"spec": scaled["spec"] | {"maxReplicas": 4}})


# --- The image and the commands -----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_pinned_image_runs_the_api_the_workers_the_webhooks_and_the_migration(overlay):
    objects = render(overlay, ("model-queue",))
    (pin,) = [image for image in yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["images"]
              if image["name"] == APP_IMAGE]
    images = {owner["metadata"]["name"]: c["image"] for owner, c in app_containers(objects)}
    assert set(images) == {"videogen-api", "videogen-worker", "videogen-worker-cogvideox-5b", "videogen-webhooks",
                           "videogen-migrate"}
    assert set(images.values()) == {f"{pin['newName']}:{pin['newTag']}"}
    assert pin["newTag"] not in ("latest", "")


def dockerfile_cmd() -> list[str]:
    (line,) = [line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line[4:])


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_the_api_runs_gunicorn_as_the_image_and_make_run_do_on_the_port_everything_else_names():
    objects = render("single-node")
    api = container(objects, "videogen-api")
    assert api["command"] == dockerfile_cmd()
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^GUNICORN := \$\(VENV\)/bin/gunicorn -c python:videogen\.gunicorn --bind ", make, re.M)
    assert api["command"][:3] == ["gunicorn", "-c", "python:videogen.gunicorn"]

    # The bind is the command's: the gunicorn config sets none that would win.
    gunicorn_config = runpy.run_path(str(ROOT / "videogen" / "gunicorn.py"))
    assert "bind" not in gunicorn_config and gunicorn_config["wsgi_app"] == "videogen.wsgi:application"
    port = int(api["command"][api["command"].index("--bind") + 1].rpartition(":")[2])
    (http,) = api["ports"]
    assert (http["name"], http["containerPort"]) == ("http", port)
    service = find(objects, "Service", "videogen-api")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] == "http"
    assert "EXPOSE 8000" in (ROOT / "docker" / "Dockerfile").read_text() and port == 8000

    # SIGTERM: the preStop pause, then gunicorn's graceful stop, inside the grace period.
    pod = find(objects, "Deployment", "videogen-api")["spec"]["template"]["spec"]
    pause = int(api["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pause + gunicorn_config["graceful_timeout"]


def test_the_workers_and_the_webhook_cluster_run_the_command_of_make_run_and_compose():
    objects = render("single-node", ("model-queue",))
    services = compose()["services"]
    assert services["worker"]["command"] == ["python", "manage.py", "qcluster"]
    recipe = (ROOT / "Makefile").read_text().split("\nrun: ", 1)[1].split("\n\n", 1)[0]
    assert "$(PY) manage.py qcluster & worker=" in recipe
    assert "Q_CLUSTER_NAME=$${VIDEOGEN_WEBHOOK_QUEUE:-videogen-webhooks} $(PY) manage.py qcluster & hooks=" in recipe

    for deployment in worker_deployments(objects):
        assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == services["worker"]["command"]

    webhooks = container(objects, "videogen-webhooks")
    env = container_env(objects, webhooks)
    # compose: ["env", "Q_CLUSTER_NAME=videogen-webhooks", <the worker's command>]
    assert services["webhooks"]["command"] == ["env", f"Q_CLUSTER_NAME={env['Q_CLUSTER_NAME']}", *webhooks["command"]]
    assert env["Q_CLUSTER_NAME"] == env["VIDEOGEN_WEBHOOK_QUEUE"]
    assert "nvidia.com/gpu" not in webhooks["resources"].get("limits", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_in_a_job_and_every_app_pod_waits_for_them(overlay):
    objects = render(overlay, ("model-queue",))
    job = find(objects, "Job", "videogen-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == compose()["services"]["migrate"]["command"]
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        if not runs_app(pod["containers"][0]):
            continue
        (wait,) = pod["initContainers"]
        assert "manage.py migrate --check" in " ".join(wait["command"]), deployment["metadata"]["name"]
        assert wait["envFrom"] == pod["containers"][0]["envFrom"]


# --- Settings -----------------------------------------------------------------


# Where the code reads its environment: settings, and what settings' docstring
# says is read before Django starts (the web server's processes, a worker's GPU).
READ_ENVIRONMENT = ("videogen/settings.py", "videogen/gunicorn.py", "generation/devices.py")


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join((v[0], *v[1])))
def test_every_variable_the_manifests_set_is_one_the_code_reads(variant):
    objects = render(*variant)
    code = "".join((ROOT / path).read_text() for path in READ_ENVIRONMENT)
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    names = set()
    for owner, spec in app_containers(objects):
        names |= set(container_env(objects, spec))
    assert "VIDEOGEN_SECRET_KEY" in names and "VIDEOGEN_DEVICES" in names
    names -= ENV_READ_ELSEWHERE
    unread = sorted(name for name in names if name.startswith("VIDEOGEN_") and f'"{name}"' not in code)
    assert not unread, f"set in docker/k8s/ but read nowhere in {READ_ENVIRONMENT}: {unread}"
    # The rest (DATABASE_URL, the bucket's, boto3's credentials) are documented there too.
    undocumented = sorted(name for name in names if f"`{name}`" not in configuration)
    assert not undocumented, f"set in docker/k8s/ but not in docs/configuration.md: {undocumented}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_settings_load_with_each_containers_environment_and_everything_required_is_set(
    overlay, monkeypatch, tmp_path
):
    objects = render(overlay, ("model-queue",))
    for owner, spec in app_containers(objects):
        where = f"{owner['metadata']['name']}/{spec['name']}"
        pod_name = f"{owner['metadata']['name']}-7d4b9-x2x7q"
        env = container_env(objects, spec, pod_name=pod_name)
        with monkeypatch.context() as patched:
            loaded = settings_with(env, patched, tmp_path)
        assert loaded["DATABASES"]["default"]["ENGINE"] == "videogen.postgresql", where
        assert loaded["Q_CLUSTER"].get("redis") == env["REDIS_URL"], where
        assert loaded["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage", where
        assert loaded["SECRET_KEY"] not in ("", "videogen-insecure-development-key"), where
        assert not loaded["DEBUG"], where
        if spec["name"] == "api":
            assert POD_IP in loaded["ALLOWED_HOSTS"] and loaded["VIDEOGEN_METRICS"], where
            assert loaded["VIDEOGEN_METRICS_TOKEN"], where
        if spec["name"] == "worker":
            assert loaded["VIDEOGEN_SLOT_DEVICES"] == ["cuda:0"] and loaded["VIDEOGEN_WORKERS"] == 1, where
            assert loaded["VIDEOGEN_WORKER_HOST"] == pod_name, where
            assert spec["resources"]["limits"]["nvidia.com/gpu"] == "1", where


def test_the_production_secrets_hold_every_key_the_containers_read_and_the_repository_holds_none():
    objects = render("production", ("model-queue",))
    assert not of_kind(objects, "Secret")
    documented = documented_secrets()
    for owner, spec in pod_templates(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in documented
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in documented[ref["name"]], f"{ref} is not in docs/kubernetes.md's install"
    assert {"VIDEOGEN_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        documented["videogen"]
    )


# --- Probes and metrics against the app itself --------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_probes_ask_a_url_the_app_answers_200_with_the_pods_own_host(overlay, settings, client, monkeypatch,
                                                                        tmp_path):
    objects = render(overlay)
    api = container(objects, "videogen-api")
    with monkeypatch.context() as patched:
        allowed = settings_with(container_env(objects, api), patched, tmp_path)["ALLOWED_HOSTS"]
    settings.ALLOWED_HOSTS = allowed
    for probe in ("readinessProbe", "livenessProbe"):
        get = api[probe]["httpGet"]
        # The kubelet sends the pod's IP and port as Host unless the probe names one.
        assert not get.get("httpHeaders")
        response = client.get(get["path"], HTTP_HOST=f"{POD_IP}:{api['ports'][0]['containerPort']}")
        assert response.status_code == 200, (probe, response.content)
        assert response.json()["status"] == "healthy"


@pytest.mark.django_db
def test_prometheus_scrapes_the_queue_gauges_keda_asks_for_with_the_token_the_api_holds(settings, monkeypatch, tmp_path):
    from django.test import RequestFactory
    from django.urls.resolvers import RegexPattern, URLResolver

    from jobs.scheduling import deployment
    from jobs.api.views import metrics_view

    objects = render("single-node", ("model-queue",))
    api = container(objects, "videogen-api")
    with monkeypatch.context() as patched:
        loaded = settings_with(container_env(objects, api), patched, tmp_path)
    monitor = find(objects, "ServiceMonitor", "videogen-api")
    (endpoint,) = monitor["spec"]["endpoints"]
    credentials = endpoint["authorization"]["credentials"]
    token = secret_data(objects, credentials["name"])[credentials["key"]]
    assert token == loaded["VIDEOGEN_METRICS_TOKEN"]

    # The ServiceMonitor finds the API's Service, on its named port.
    service = find(objects, "Service", "videogen-api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]

    # The route exists when metrics are on, and answers the scrape.
    settings.VIDEOGEN_METRICS = True
    settings.VIDEOGEN_METRICS_TOKEN = token
    settings.VIDEOGEN_MODELS = loaded["VIDEOGEN_MODELS"]
    settings.VIDEOGEN_DEFAULT_MODEL = loaded["VIDEOGEN_DEFAULT_MODEL"]
    settings.VIDEOGEN_MODEL_QUEUES = loaded["VIDEOGEN_MODEL_QUEUES"]
    deployment.forget()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    (tmp_path / "prometheus").mkdir(exist_ok=True)
    urls = runpy.run_path(str(ROOT / "videogen" / "urls.py"))
    match = URLResolver(RegexPattern(r"^/"), urls["urlpatterns"]).resolve(endpoint["path"])
    assert match.func is metrics_view
    request = RequestFactory().get(endpoint["path"], HTTP_AUTHORIZATION=f"Bearer {token}")
    response = match.func(request)
    assert response.status_code == 200, response.content
    scrape = response.content.decode()
    deployment.forget()

    # Every ScaledObject's query names gauges and models the scrape has.
    for scaled in of_kind(objects, "ScaledObject"):
        query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        for family, labels in re.findall(r"(videogen_\w+)\{([^}]*)\}", query):
            models = re.search(r'model=~"([^"]+)"', labels).group(1).split("|")
            for model in models:
                assert f'{family}{{model="{model}"}} 0' in scrape, (scaled["metadata"]["name"], family, model)


# --- Scaling ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_deployment_scales_on_the_queue_of_exactly_the_models_it_serves(overlay, monkeypatch, tmp_path):
    from jobs.metrics.series import HELP

    objects = render(overlay, ("model-queue",))
    config = find(objects, "ConfigMap", "videogen")["data"]
    monitor = find(objects, "ServiceMonitor", "videogen-api")
    queues = dict(item.split("=") for item in config.get("VIDEOGEN_MODEL_QUEUES", "").split(",") if item)
    served = config["VIDEOGEN_MODELS"].split(",")
    assert set(queues) <= set(served)
    workers = worker_deployments(objects)
    assert len(workers) == 1 + len(set(queues.values()))
    for worker in workers:
        name = worker["metadata"]["name"]
        env = container_env(objects, worker["spec"]["template"]["spec"]["containers"][0])
        queue = env.get("Q_CLUSTER_NAME")
        expected = {model for model, q in queues.items() if q == queue} if queue else set(served) - set(queues)
        (scaled,) = [s for s in of_kind(objects, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name]
        assert scaled["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert "replicas" not in worker["spec"], f"{name}: KEDA owns the count"
        (trigger,) = scaled["spec"]["triggers"]
        assert (trigger["type"], trigger["metricType"], trigger["metadata"]["threshold"]) == (
            "prometheus", "AverageValue", "1"
        )
        query = trigger["metadata"]["query"]
        selectors = re.findall(r"(videogen_\w+)\{([^}]*)\}", query)
        assert {family for family, _ in selectors} == {"videogen_jobs_pending", "videogen_jobs_running"}
        for family, labels in selectors:
            assert family in HELP
            pairs = dict(re.findall(r'(\w+)=~?"([^"]*)"', labels))
            assert set(pairs["model"].split("|")) == expected, (name, pairs["model"])
            assert pairs["namespace"] == scaled["metadata"]["namespace"] == worker["metadata"]["namespace"]
            # Prometheus names the scrape job after the Service the ServiceMonitor selects.
            assert pairs["job"] == "videogen-api" and find(objects, "Service", pairs["job"])
            assert monitor["metadata"]["namespace"] == pairs["namespace"]
        assert 0 <= scaled["spec"].get("minReplicaCount", 0) <= scaled["spec"]["maxReplicaCount"]


def test_scale_to_zero_is_an_option_and_one_warm_worker_the_default():
    default = find(render("single-node"), "ScaledObject", "videogen-worker")["spec"]
    assert default["minReplicaCount"] == 1
    assert find(render("single-node", ("model-queue", "scale-to-zero")), "ScaledObject", "videogen-worker")[
        "spec"]["minReplicaCount"] == 0


def test_the_api_scales_on_cpu_and_keeps_two_pods():
    objects = render("production")
    hpa = find(objects, "HorizontalPodAutoscaler", "videogen-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "videogen-api"}
    assert hpa["minReplicas"] >= 2 and [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "replicas" not in find(objects, "Deployment", "videogen-api")["spec"]
    assert container(objects, "videogen-api")["resources"]["requests"]["cpu"]


# --- Stopping -----------------------------------------------------------------


def measured_stop_bound() -> tuple[float, float]:
    """
    (margin, longest): bench/stops.py holds a stop to VIDEOGEN_SHUTDOWN_TIMEOUT
    + margin seconds, and bench/history/stops.md has the longest stop it measured.
    """
    bench = (ROOT / "bench" / "stops.py").read_text()
    margin = float(re.search(r"deadline = args\.shutdown_timeout \+ (\d+(?:\.\d+)?)", bench).group(1))
    section = (ROOT / "bench" / "history" / "stops.md").read_text()
    assert re.search(r"SIGTERM to the parent only \(docker\)\s+20\s+20\s+0\s+20", section)
    longest = float(re.search(r"Every stop ended in [\d.]+-([\d.]+) s", section).group(1))
    return margin, longest


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_measured_hand_back(overlay, monkeypatch, tmp_path):
    margin, longest = measured_stop_bound()
    objects = render(overlay, ("model-queue",))
    for deployment in worker_deployments(objects) + [find(objects, "Deployment", "videogen-webhooks")]:
        pod = deployment["spec"]["template"]["spec"]
        with monkeypatch.context() as patched:
            loaded = settings_with(container_env(objects, pod["containers"][0]), patched, tmp_path)
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > loaded["VIDEOGEN_SHUTDOWN_TIMEOUT"] + margin > longest, deployment["metadata"]["name"]
        # The pause container reaps orphans, as compose's `init: true`.
        assert pod["shareProcessNamespace"] is True


def test_a_rollout_or_a_drain_stops_one_worker_at_a_time():
    objects = render("production", ("model-queue",))
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in worker_deployments(objects):
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    # Every API and worker pod is under exactly one budget (eviction refuses a pod under two).
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, (deployment["metadata"]["name"], [b["metadata"]["name"] for b in covering])


# --- Security and network -----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_app_containers_run_as_non_root_on_a_read_only_root_with_limits(overlay):
    objects = render(overlay, ("model-queue",))
    for owner, spec in pod_templates(objects):
        pod_security = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{owner['metadata']['name']}/{c['name']}"
            assert pod_security.get("runAsNonRoot") is True, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            if owner["metadata"]["name"] != "videogen-postgres":
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, where
    for owner, c in app_containers(objects):
        assert "/tmp" in [m["mountPath"] for m in c["volumeMounts"]], owner["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_api_is_reachable_from_outside_the_namespace(overlay):
    objects = render(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    # Every pod is under a policy that admits only this namespace's pods...
    (same_namespace,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert same_namespace["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    # ...and the one rule open to everyone selects the API's pods, on its port only.
    api_labels = find(objects, "Deployment", "videogen-api")["spec"]["template"]["metadata"]["labels"]
    for policy in policies:
        for rule in policy["spec"]["ingress"]:
            if "from" not in rule:
                assert policy["spec"]["podSelector"]["matchLabels"].items() <= api_labels.items()
                assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
                for deployment in of_kind(objects, "Deployment"):
                    labels = deployment["spec"]["template"]["metadata"]["labels"]
                    if deployment["metadata"]["name"] != "videogen-api":
                        assert not policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_production_has_an_ingress_with_a_body_limit_an_unbuffered_event_stream_and_spread_api_pods():
    objects = render("production")
    ingresses = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "Ingress")}
    for ingress in ingresses.values():
        assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = find(objects, "Service", backend["name"])
                assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    events = ingresses["videogen-events"]
    assert events["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    (path,) = events["spec"]["rules"][0]["http"]["paths"]
    assert re.fullmatch(path["path"], f"/api/v1/job/{uuid.uuid4()}/events")
    assert not re.fullmatch(path["path"], f"/api/v1/job/{uuid.uuid4()}")
    affinity = find(objects, "Deployment", "videogen-api")["spec"]["template"]["spec"]["affinity"]
    (term,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert not [obj for obj in objects if obj["metadata"]["name"] in ("videogen-postgres", "videogen-redis")]


# --- The original's deployment ------------------------------------------------


def test_each_object_of_the_originals_k3s_deployment_has_a_counterpart_in_single_node():
    objects = render("single-node")
    docs = DOCS.read_text()
    for original, counterparts in ORIGINAL_K3S.items():
        for kind, name in counterparts:
            find(objects, kind, name)
            assert re.search(rf"^\| {re.escape(original)} \|.*`{re.escape(name)}`", docs, re.M), (
                f"docs/kubernetes.md's table does not give {original}'s counterpart {kind} {name}"
            )
    # The counterparts are used: the PostgreSQL and MinIO claims are mounted, the
    # weights cache by every worker, and the Secret feeds the app.
    for deployment, claim in [("videogen-postgres", "videogen-postgres"), ("videogen-minio", "videogen-minio"),
                              ("videogen-worker", "videogen-huggingface")]:
        volumes = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["volumes"]
        assert claim in [v.get("persistentVolumeClaim", {}).get("claimName") for v in volumes], deployment
    assert all(secret_data(objects, "videogen").values())
