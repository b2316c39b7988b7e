"""JWT for API clients: obtain, use, refresh with rotation, logout by blacklisting, and the
tokens that must be refused (expired, forged, tampered, of the wrong type)."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.testing import TEST_PASSWORD, token_pair_for

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
# Long enough for HS256, and not our SECRET_KEY.
ATTACKER_KEY = "an-attackers-key-that-is-not-the-sites-secret-key"


def obtain(client: APIClient, username: str, password: str) -> dict[str, str]:
    response = client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def me_with(access: str) -> tuple[int, dict]:
    """GET /api/auth/me/ with only the given bearer token (no session)."""
    client = APIClient()
    response = client.get(ME, HTTP_AUTHORIZATION=f"Bearer {access}")
    return response.status_code, response.json()


def test_a_user_obtains_a_token_pair_with_the_password(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    tokens = obtain(api_client, "alice", TEST_PASSWORD)
    assert set(tokens) == {"access", "refresh"}
    assert AccessToken(tokens["access"])["user_id"] == str(alice.pk)


def test_a_wrong_password_gets_no_token(api_client: APIClient, alice: AbstractBaseUser) -> None:
    response = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json"
    )
    assert response.status_code == 401
    assert "access" not in response.json()


def test_the_access_token_authenticates_on_me(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    tokens = obtain(api_client, "alice", TEST_PASSWORD)
    status, body = me_with(tokens["access"])
    assert status == 200
    usage = body.pop("usage")
    assert body == {"id": alice.pk, "username": "alice", "email": alice.email, "is_staff": False}
    assert (usage["runs"], usage["runs_limit"]) == (0, None)  # no budget set


def test_me_refuses_an_anonymous_request(api_client: APIClient) -> None:
    assert api_client.get(ME).status_code == 401


def test_me_accepts_the_browser_session(api_client: APIClient, bob: AbstractBaseUser) -> None:
    api_client.force_login(bob)
    response = api_client.get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


def test_refresh_rotates_and_the_old_refresh_token_is_refused(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    tokens = obtain(api_client, "alice", TEST_PASSWORD)
    response = api_client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["refresh"] != tokens["refresh"]
    assert me_with(rotated["access"])[0] == 200
    # The old refresh token was blacklisted by the rotation.
    again = api_client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert again.status_code == 401
    # The new one still works.
    newer = api_client.post(
        "/api/auth/token/refresh/", {"refresh": rotated["refresh"]}, format="json"
    )
    assert newer.status_code == 200


def test_logout_blacklists_the_refresh_token(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    tokens = obtain(api_client, "alice", TEST_PASSWORD)
    response = api_client.post(
        "/api/auth/token/blacklist/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert response.status_code == 200
    refresh = api_client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert refresh.status_code == 401


def test_verify_accepts_a_valid_token_and_refuses_a_forged_one(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    access = token_pair_for(alice)["access"]
    ok = api_client.post("/api/auth/token/verify/", {"token": access}, format="json")
    assert ok.status_code == 200
    forged = forge(jwt.decode(access, options={"verify_signature": False}), key=ATTACKER_KEY)
    bad = api_client.post("/api/auth/token/verify/", {"token": forged}, format="json")
    assert bad.status_code == 401


def test_verify_answers_a_blacklisted_token_401_like_any_invalid_one(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    refresh = token_pair_for(alice)["refresh"]
    out = api_client.post("/api/auth/token/blacklist/", {"refresh": refresh}, format="json")
    assert out.status_code == 200
    answer = api_client.post("/api/auth/token/verify/", {"token": refresh}, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "authentication_failed"


def test_a_401_says_what_is_wrong_in_a_sentence_not_a_python_repr(api_client: APIClient) -> None:
    answer = api_client.get(ME, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert message == "Given token not valid for any token type"
    assert "ErrorDetail" not in answer.content.decode()


def forge(claims: dict, *, key: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_an_expired_access_token_is_refused(alice: AbstractBaseUser) -> None:
    token = AccessToken.for_user(alice)
    # Issued two hours ago with the configured lifetime: long expired now.
    token.set_exp(from_time=timezone.now() - timedelta(hours=2))
    assert token["exp"] < timezone.now().timestamp()
    assert me_with(str(token))[0] == 401


def test_an_expired_refresh_token_cannot_be_refreshed(
    api_client: APIClient, alice: AbstractBaseUser
) -> None:
    refresh = RefreshToken.for_user(alice)
    refresh.set_exp(from_time=timezone.now() - timedelta(days=30))
    response = api_client.post("/api/auth/token/refresh/", {"refresh": str(refresh)}, format="json")
    assert response.status_code == 401


def test_a_token_signed_with_another_key_is_refused(alice: AbstractBaseUser) -> None:
    claims = jwt.decode(token_pair_for(alice)["access"], options={"verify_signature": False})
    assert me_with(forge(claims, key=ATTACKER_KEY))[0] == 401


def test_a_tampered_payload_with_the_original_signature_is_refused(
    alice: AbstractBaseUser, bob: AbstractBaseUser
) -> None:
    access = token_pair_for(alice)["access"]
    header, _payload, signature = access.split(".")
    claims = jwt.decode(access, options={"verify_signature": False})
    claims["user_id"] = str(bob.pk)
    _, bob_payload, _ = forge(claims, key=ATTACKER_KEY).split(".")
    status, _ = me_with(f"{header}.{bob_payload}.{signature}")
    assert status == 401


def test_an_unsigned_alg_none_token_is_refused(alice: AbstractBaseUser) -> None:
    claims = jwt.decode(token_pair_for(alice)["access"], options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    assert me_with(unsigned)[0] == 401


def test_a_refresh_token_is_not_accepted_as_an_access_token(alice: AbstractBaseUser) -> None:
    assert me_with(token_pair_for(alice)["refresh"])[0] == 401


def test_a_token_of_a_deactivated_user_is_refused(alice: AbstractBaseUser) -> None:
    access = token_pair_for(alice)["access"]
    alice.is_active = False
    alice.save()
    assert me_with(access)[0] == 401


def test_tokens_are_signed_with_the_secret_key(alice: AbstractBaseUser) -> None:
    access = token_pair_for(alice)["access"]
    claims = jwt.decode(access, settings.SECRET_KEY, algorithms=["HS256"])
    assert claims["token_type"] == "access"
