"""Account routes: login/logout pages for the browser, JWT endpoints for API clients.

Mounted at the site root by atlaschat.urls, so the paths below are the public ones.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.views import MeView, TokenCheckView, TokenLogoutView, TokenObtainView, TokenRotateView

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    # Django's LogoutView only accepts POST: a link or an <img> on another page cannot log
    # anyone out.
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/auth/token/", TokenObtainView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/refresh/", TokenRotateView.as_view(), name="token_refresh"),
    path("api/auth/token/verify/", TokenCheckView.as_view(), name="token_verify"),
    # API logout: blacklists the refresh token it is given, so it can no longer be refreshed.
    path("api/auth/token/blacklist/", TokenLogoutView.as_view(), name="token_blacklist"),
    path("api/auth/me/", MeView.as_view(), name="me"),
]
