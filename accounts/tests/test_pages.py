"""Login and logout pages: session authentication for the browser."""

from __future__ import annotations

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client

from accounts.testing import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def test_the_login_page_shows_a_form_with_a_csrf_token(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content
    assert b'name="csrfmiddlewaretoken"' in response.content


def test_logging_in_with_the_password_starts_a_session(
    client: Client, alice: AbstractBaseUser
) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/api/auth/me/").json()["username"] == "alice"


def test_logging_in_goes_back_to_the_page_asked_for(
    client: Client, alice: AbstractBaseUser
) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": TEST_PASSWORD, "next": "/api/docs/"},
    )
    assert response["Location"] == "/api/docs/"


def test_login_never_redirects_to_another_site(client: Client, alice: AbstractBaseUser) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": TEST_PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == "/"


def test_a_wrong_password_shows_the_form_again_with_an_error(
    client: Client, alice: AbstractBaseUser
) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"did not match" in response.content
    assert client.get("/api/auth/me/").status_code in (401, 403)


def test_the_login_form_needs_the_csrf_token(alice: AbstractBaseUser) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 403


def test_logout_by_get_is_refused(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/api/auth/me/").status_code == 200


def test_logout_by_post_ends_the_session(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/api/auth/me/").status_code in (401, 403)


def test_a_logged_in_user_visiting_login_is_sent_home(
    client: Client, bob: AbstractBaseUser
) -> None:
    client.force_login(bob)
    response = client.get("/accounts/login/")
    assert response.status_code == 302
    assert response["Location"] == "/"
