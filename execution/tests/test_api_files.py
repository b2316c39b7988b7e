"""Files through the API: write-file/read-file, multipart upload, raw download, delete, and
their limits, with a real sandboxd."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from execution.models import SecurityEvent, Thread, WorkspaceFile

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(120)]


@pytest.fixture
def client(jwt_client: Any, alice: Any, sandboxd: Any) -> Any:
    return jwt_client(alice)


@pytest.fixture
def thread(alice: Any) -> Thread:
    return Thread.objects.create(owner=alice)


def error_code(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.django_db
def test_a_written_file_is_read_back_and_visible_to_code(client: Any, thread: Thread) -> None:
    written = client.post(
        "/api/code/write-file",
        {"thread_id": str(thread.pk), "path": "docs/hello.txt", "content": "héllo\n"},
        format="json",
    )
    assert written.status_code == 201, written.content
    assert written.json()["size"] == len("héllo\n".encode())
    assert written.json()["download_url"] == f"/api/threads/{thread.pk}/files/docs/hello.txt"

    read = client.post(
        "/api/code/read-file",
        {"thread_id": str(thread.pk), "path": "docs/hello.txt"},
        format="json",
    )
    assert read.json() == {
        "thread_id": str(thread.pk), "path": "docs/hello.txt", "size": 7,
        "encoding": "utf-8", "content": "héllo\n",
    }  # fmt: skip

    run = client.post(
        "/api/code/execute",
        {"thread_id": str(thread.pk), "language": "bash", "code": "cat docs/hello.txt"},
        format="json",
    )
    assert run.json()["stdout"] == "héllo\n"


@pytest.mark.django_db
def test_it_writes_and_reads_binary_content_as_base64(client: Any, thread: Thread) -> None:
    data = bytes(range(256))
    client.post(
        "/api/code/write-file",
        {
            "thread_id": str(thread.pk),
            "path": "blob.bin",
            "content": base64.b64encode(data).decode(),
            "encoding": "base64",
        },
        format="json",
    )
    read = client.post(
        "/api/code/read-file", {"thread_id": str(thread.pk), "path": "blob.bin"}, format="json"
    )

    assert read.json()["encoding"] == "base64"
    assert base64.b64decode(read.json()["content"]) == data


@pytest.mark.django_db
def test_write_file_without_a_thread_starts_one(client: Any, alice: Any) -> None:
    response = client.post("/api/code/write-file", {"path": "a.txt", "content": "x"}, format="json")

    assert response.status_code == 201
    assert Thread.objects.get(pk=response.json()["thread_id"]).owner == alice


@pytest.mark.django_db
def test_it_reads_a_file_the_code_created(client: Any, thread: Thread) -> None:
    client.post(
        "/api/code/execute",
        {
            "thread_id": str(thread.pk),
            "language": "python",
            "code": "open('made.csv','w').write('a,b\\n1,2\\n')",
        },
        format="json",
    )
    read = client.post(
        "/api/code/read-file", {"thread_id": str(thread.pk), "path": "made.csv"}, format="json"
    )

    assert read.json()["content"] == "a,b\n1,2\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../escape.txt", "path_traversal"),
        ("/etc/passwd", "path_system"),
        ("/home/alice/x", "path_outside_workspace"),
        ("bad\x07name", "path_control_characters"),
        ("setup.exe", "path_suspicious_extension"),
    ],
)
def test_it_refuses_paths_outside_the_rules_with_400_and_audits_them(
    client: Any, thread: Thread, path: str, code: str
) -> None:
    response = client.post(
        "/api/code/write-file",
        {"thread_id": str(thread.pk), "path": path, "content": "x"},
        format="json",
    )

    assert error_code(response) == (400, code)
    assert SecurityEvent.objects.filter(code=code, kind="validation").exists()
    assert not WorkspaceFile.objects.filter(thread=thread).exists()


@pytest.mark.django_db
def test_it_answers_413_for_a_file_over_the_limit(
    client: Any, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 100
    response = client.post(
        "/api/code/write-file",
        {"thread_id": str(thread.pk), "path": "big.txt", "content": "x" * 101},
        format="json",
    )
    upload = client.post(
        f"/api/threads/{thread.pk}/files/",
        {"file": SimpleUploadedFile("big.bin", b"x" * 101)},
        format="multipart",
    )

    assert error_code(response) == (413, "file_too_large")
    assert error_code(upload) == (413, "file_too_large")
    assert not WorkspaceFile.objects.filter(thread=thread).exists()


@pytest.mark.django_db
def test_it_answers_400_for_invalid_base64(client: Any, thread: Thread) -> None:
    response = client.post(
        "/api/code/write-file",
        {"thread_id": str(thread.pk), "path": "x.bin", "content": "***", "encoding": "base64"},
        format="json",
    )
    assert error_code(response) == (400, "invalid_base64")


@pytest.mark.django_db
def test_read_file_answers_404_for_a_missing_file(client: Any, thread: Thread) -> None:
    response = client.post(
        "/api/code/read-file", {"thread_id": str(thread.pk), "path": "nope.txt"}, format="json"
    )
    assert error_code(response) == (404, "file_not_found")


@pytest.mark.django_db
def test_it_uploads_multipart_lists_downloads_raw_bytes_and_deletes(
    client: Any, thread: Thread
) -> None:
    payload = b"<script>alert(1)</script>"
    upload = client.post(
        f"/api/threads/{thread.pk}/files/",
        {
            "file": SimpleUploadedFile("page.html", payload, content_type="text/html"),
            "path": "web/page.html",
        },
        format="multipart",
    )
    assert upload.status_code == 201, upload.content

    listing = client.get(f"/api/threads/{thread.pk}/files/").json()
    assert [f["path"] for f in listing["results"]] == ["web/page.html"]

    download = client.get(f"/api/threads/{thread.pk}/files/web/page.html")
    assert download.status_code == 200
    assert (
        b"".join(download.streaming_content if download.streaming else [download.content])
        == payload
    )
    # User content is always a download and never runs as a page of ours.
    assert download["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in download["Content-Security-Policy"]

    deleted = client.delete(f"/api/threads/{thread.pk}/files/web/page.html")
    assert deleted.status_code == 204
    assert client.get(f"/api/threads/{thread.pk}/files/web/page.html").status_code == 404


@pytest.mark.django_db
def test_an_upload_takes_the_files_name_when_no_path_is_given(client: Any, thread: Thread) -> None:
    response = client.post(
        f"/api/threads/{thread.pk}/files/",
        {"file": SimpleUploadedFile("data.csv", b"1,2")},
        format="multipart",
    )
    assert response.json()["path"] == "data.csv"


@pytest.mark.django_db
def test_deleting_a_missing_file_answers_404(client: Any, thread: Thread) -> None:
    assert error_code(client.delete(f"/api/threads/{thread.pk}/files/none.txt")) == (
        404,
        "file_not_found",
    )


@pytest.mark.django_db
def test_it_installs_a_package_and_lists_the_threads_packages(client: Any, thread: Thread) -> None:
    response = client.post(
        "/api/code/install-packages",
        {"thread_id": str(thread.pk), "language": "python", "packages": ["six==1.17.0"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "succeeded"

    run = client.post(
        "/api/code/execute",
        {"thread_id": str(thread.pk), "language": "python", "code": "import six; print(six.PY3)"},
        format="json",
    )
    assert run.json()["stdout"] == "True\n"
    listing = client.get(f"/api/threads/{thread.pk}/packages/").json()
    assert [(p["packages"], p["status"]) for p in listing["results"]] == [
        (["six==1.17.0"], "succeeded")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("packages", "language", "code"),
    [
        (["requests; rm -rf /"], "python", "package_spec_shell"),
        (["--index-url=http://evil"], "python", "package_spec_option"),
        (["https://evil.example/x.whl"], "python", "package_spec_url"),
        (["left-pad"], "bash", "packages_unsupported_language"),
        ([], "python", "packages_invalid"),
    ],
)
def test_it_refuses_unsafe_package_specs_with_400(
    client: Any, thread: Thread, packages: list[str], language: str, code: str
) -> None:
    response = client.post(
        "/api/code/install-packages",
        {"thread_id": str(thread.pk), "language": language, "packages": packages},
        format="json",
    )
    assert error_code(response) == (400, code)
    assert SecurityEvent.objects.filter(code=code).exists()


@pytest.mark.django_db
def test_it_throttles_installs_per_user(client: Any, thread: Thread, settings: Any) -> None:
    from django.core.cache import cache

    settings.INSTALL_THROTTLE_RATE = "1/minute"
    cache.clear()
    body = {"thread_id": str(thread.pk), "language": "python", "packages": ["-x"]}
    try:
        first = client.post("/api/code/install-packages", body, format="json")
        second = client.post("/api/code/install-packages", body, format="json")
    finally:
        cache.clear()
    assert first.status_code == 400
    assert error_code(second) == (429, "throttled")
    assert "Retry-After" in second
