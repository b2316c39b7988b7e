"""Test helpers for logging users in over the API and websockets (used by conftest.py).

Kept in the package rather than in conftest.py so that test modules and the live-server
harnesses of other apps can import them.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

# The password of every user the fixtures create; tests that log in through a form or the
# token endpoint use it.
TEST_PASSWORD = "correct-horse-battery-staple"  # noqa: S105


def token_pair_for(user: AbstractBaseUser) -> dict[str, str]:
    """Return a fresh {"refresh": …, "access": …} pair for the user, as the token endpoint would."""
    refresh = RefreshToken.for_user(user)
    return {"refresh": str(refresh), "access": str(refresh.access_token)}


def bearer_headers_for(user: AbstractBaseUser) -> dict[str, str]:
    """Return the HTTP header that authenticates the user with a new access token."""
    return {"Authorization": f"Bearer {token_pair_for(user)['access']}"}


def jwt_client_for(user: AbstractBaseUser) -> APIClient:
    """Return an APIClient that sends a valid access token of the user on every request."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=bearer_headers_for(user)["Authorization"])
    return client
