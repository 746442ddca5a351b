"""The playground page at `/`: served by Django, its assets by this server only."""

import re

import pytest


@pytest.fixture
def page(client):
    response = client.get("/", HTTP_HOST="127.0.0.1")
    assert response.status_code == 200
    return response


def test_the_root_serves_the_playground_page(page):
    assert page["Content-Type"].startswith("text/html")
    assert b"<title>videogen playground</title>" in page.content


def test_the_page_loads_its_assets_from_this_server_only(page):
    assets = re.findall(rb'(?:src|href)="([^"#]+)"', page.content)
    assert b"/static/playground/playground.js" in assets and b"/static/playground/playground.css" in assets
    assert not re.search(rb"https?://", page.content)


def test_every_form_control_has_a_label(page):
    html = page.content.decode()
    controls = re.findall(r'<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"', html)
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    assert controls and set(controls) <= labelled, set(controls) - labelled


def test_the_root_takes_no_posts(client):
    assert client.post("/", HTTP_HOST="127.0.0.1").status_code == 405


def test_health_stays_at_the_root(client, db):
    assert client.get("/health", HTTP_HOST="127.0.0.1").status_code in (200, 503)
    assert client.get("/api/v1/health", HTTP_HOST="127.0.0.1").status_code in (200, 503)
