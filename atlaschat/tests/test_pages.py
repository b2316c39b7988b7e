"""The project's own pages: the landing page and the site header, the health check, the API
schema and its offline docs."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_home_page_asks_an_anonymous_visitor_to_log_in(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b'href="/accounts/login/"' in response.content
    assert b"/api/docs/" not in response.content


def test_the_header_links_a_user_to_the_api_docs(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b'href="/api/docs/"' in response.content
    assert b"alice" in response.content
    # alice is not staff: no admin link for her
    assert b'href="/admin/"' not in response.content


def test_the_header_links_staff_to_the_admin(client: Client, staff: AbstractBaseUser) -> None:
    client.force_login(staff)
    assert b'href="/admin/"' in client.get("/").content


def test_pages_load_htmx_from_our_own_static_files(client: Client) -> None:
    content = client.get("/").content.decode()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', content)
    assert scripts == ["/static/vendor/htmx.org/htmx.min.js"]


def test_healthz_reports_ok_without_authentication(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_the_openapi_schema_describes_the_auth_endpoints(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/auth/token/", "/api/auth/token/refresh/", "/api/auth/me/"):
        assert path in paths


def test_the_api_docs_are_served_without_any_cdn(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    content = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', content)
    assert any("swagger-ui" in source for source in sources)
    # Every script and stylesheet comes from this site.
    assert all(source.startswith("/") for source in sources), sources


def test_healthz_answers_head_requests_too(client: Client) -> None:
    assert client.head("/healthz").status_code == 200


def test_healthz_refuses_a_post(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
