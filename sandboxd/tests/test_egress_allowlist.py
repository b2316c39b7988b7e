"""The egress allow-list is derived at run time from the host's pip and npm settings."""

from __future__ import annotations

import pytest

from sandboxd.jail.egress import derive_allowed


def test_the_allow_list_follows_the_hosts_pip_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://packages.example.internal:8443/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/local-index http://mirror.example.lan/")
    allowed = derive_allowed("https://npm.example.internal/")
    assert allowed.endpoints == {
        ("packages.example.internal", 8443),
        ("mirror.example.lan", 80),
        ("npm.example.internal", 443),
    }
    assert allowed.pip_index_url == "https://packages.example.internal:8443/simple"
    assert allowed.pip_extra_index_urls == ("http://mirror.example.lan/",)  # file:// dropped


def test_without_an_index_setting_pip_defaults_come_from_pips_own_internals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pip._internal.models.index import PyPI

    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    allowed = derive_allowed(None)
    hosts = {host for host, _ in allowed.endpoints}
    assert PyPI.netloc in hosts and PyPI.file_storage_domain in hosts
