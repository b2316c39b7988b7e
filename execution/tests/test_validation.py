"""Each policy rule of execution.services.validation, accepted and refused with its code."""

from __future__ import annotations

import pytest

from execution.services.errors import ToolError
from execution.services.validation import (
    validate_code,
    validate_file_size,
    validate_language,
    validate_package_spec,
    validate_package_specs,
    validate_path_fits,
    validate_timeout,
    validate_workspace_path,
)


def rejection(func, *args, **kwargs) -> ToolError:
    with pytest.raises(ToolError) as info:
        func(*args, **kwargs)
    assert info.value.kind == "validation"
    return info.value


# --- languages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("python", "python"),
        ("JavaScript", "javascript"),
        ("typescript", "typescript"),
        ("bash", "bash"),
        ("js", "javascript"),
        ("ts", "typescript"),
        ("py", "python"),
        ("sh", "bash"),
    ],
)
def test_it_accepts_supported_languages_and_their_aliases(given: str, expected: str) -> None:
    assert validate_language(given) == expected


@pytest.mark.parametrize("given", ["ruby", "", "  ", None, 3, "python2"])
def test_it_refuses_languages_outside_the_allow_list(given: object) -> None:
    error = rejection(validate_language, given)
    assert error.code == "unsupported_language"
    assert error.status == 400
    assert error.details["allowed"] == ["python", "javascript", "typescript", "bash"]


# --- code -----------------------------------------------------------------------------------


def test_it_returns_code_within_the_size_limit_unchanged() -> None:
    assert validate_code("print(1)\n", max_bytes=9) == "print(1)\n"


def test_it_refuses_code_over_the_size_limit_counting_utf8_bytes_with_413() -> None:
    error = rejection(validate_code, "é" * 5, max_bytes=9)  # 10 bytes, 5 characters
    assert (error.code, error.status) == ("code_too_large", 413)
    assert error.details == {"size": 10, "limit": 9}


@pytest.mark.parametrize("code", ["", "   \n\t"])
def test_it_refuses_empty_code(code: str) -> None:
    assert rejection(validate_code, code, max_bytes=100).code == "code_empty"


@pytest.mark.parametrize("code", [b"print(1)", None, "print(1)\x00"])
def test_it_refuses_code_that_is_not_text_or_holds_nul(code: object) -> None:
    assert rejection(validate_code, code, max_bytes=100).code == "code_invalid"


def test_it_refuses_code_matching_a_configured_dangerous_pattern() -> None:
    patterns = [r"\bos\.system\(", r"^import\s+ctypes"]
    error = rejection(
        validate_code, "x = 1\nimport ctypes\n", max_bytes=1000, dangerous_patterns=patterns
    )
    assert error.code == "dangerous_pattern"
    assert error.details["pattern"] == r"^import\s+ctypes"
    assert error.details["match"] == "import ctypes"


def test_it_accepts_code_that_matches_no_dangerous_pattern() -> None:
    code = "import os\nprint(os.getcwd())"
    assert validate_code(code, max_bytes=1000, dangerous_patterns=[r"os\.system"]) == code


def test_it_names_the_setting_when_a_dangerous_pattern_is_not_a_regex() -> None:
    with pytest.raises(ValueError, match="EXECUTION_DANGEROUS_PATTERNS"):
        validate_code("x", max_bytes=10, dangerous_patterns=["(unclosed"])


# --- timeouts -------------------------------------------------------------------------------


def test_it_uses_the_default_timeout_when_none_is_given() -> None:
    assert validate_timeout(None, default=60, maximum=300) == 60


def test_it_caps_the_default_timeout_at_the_maximum() -> None:
    assert validate_timeout(None, default=600, maximum=300) == 300


def test_it_accepts_a_timeout_up_to_the_maximum() -> None:
    assert validate_timeout(300, default=60, maximum=300) == 300.0
    assert validate_timeout(0.5, default=60, maximum=300) == 0.5


@pytest.mark.parametrize("timeout", [0, -1, 300.01, float("nan"), float("inf")])
def test_it_refuses_a_timeout_outside_the_range(timeout: float) -> None:
    assert rejection(validate_timeout, timeout, default=60, maximum=300).code == (
        "timeout_out_of_range"
    )


@pytest.mark.parametrize("timeout", ["10", True, [1]])
def test_it_refuses_a_timeout_that_is_not_a_number(timeout: object) -> None:
    assert rejection(validate_timeout, timeout, default=60, maximum=300).code == "timeout_invalid"


# --- workspace paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("data.csv", "data.csv"),
        ("./out/plot.png", "out/plot.png"),
        ("a//b/./c.txt", "a/b/c.txt"),
        ("/home/user/notes/today.md", "notes/today.md"),
        ("src/main.ts", "src/main.ts"),
        ("naïve résumé.txt", "naïve résumé.txt"),
    ],
)
def test_it_normalises_workspace_relative_paths(given: str, expected: str) -> None:
    assert validate_workspace_path(given) == expected


@pytest.mark.parametrize("path", ["../secret", "a/../../etc/passwd", "/home/user/../root/x", ".."])
def test_it_refuses_paths_with_parent_components(path: str) -> None:
    assert rejection(validate_workspace_path, path).code == "path_traversal"


@pytest.mark.parametrize("path", ["/home/other/file", "/home/username/x", "~/x", "~root/x"])
def test_it_refuses_paths_outside_the_workspace(path: str) -> None:
    assert rejection(validate_workspace_path, path).code == "path_outside_workspace"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/dev/sda",
        "/proc/self/environ",
        "/sys/kernel/x",
        "/tmp/x",
        "/root/.ssh/id_rsa",
    ],
)
def test_it_refuses_device_and_system_paths(path: str) -> None:
    assert rejection(validate_workspace_path, path).code == "path_system"


@pytest.mark.parametrize(
    "path", ["a\x00b", "line\nbreak", "tab\there", "bell\x07", "rtl\u202eexe.txt", "\x7f"]
)
def test_it_refuses_paths_with_control_or_invisible_characters(path: str) -> None:
    assert rejection(validate_workspace_path, path).code == "path_control_characters"


@pytest.mark.parametrize(
    "path", ["", "  ", None, ".", "/home/user", "/home/user/", "x" * 1025, "a/" + "b" * 256]
)
def test_it_refuses_empty_overlong_or_directory_only_paths(path: object) -> None:
    assert rejection(validate_workspace_path, path).code == "path_invalid"


@pytest.mark.parametrize("path", ["tool.exe", "dir/RUN.BAT", "x.ps1"])
def test_it_refuses_configured_suspicious_extensions_case_insensitively(path: str) -> None:
    error = rejection(validate_workspace_path, path, suspicious_extensions=[".exe", "bat", ".ps1"])
    assert error.code == "path_suspicious_extension"


@pytest.mark.parametrize("path", ["x.exe.", "x.exe ", "x.bat..", "dir/x.EXE. .", "x.exe::$DATA"])
def test_it_refuses_a_suspicious_extension_hidden_by_trailing_dots_spaces_or_a_stream(
    path: str,
) -> None:
    error = rejection(validate_workspace_path, path, suspicious_extensions=[".exe", ".bat"])
    assert error.code == "path_suspicious_extension"


def test_it_refuses_a_name_over_255_bytes_even_when_it_is_under_255_characters() -> None:
    name = "é" * 128  # 128 characters, 256 bytes in UTF-8
    assert validate_workspace_path("é" * 127) == "é" * 127
    error = rejection(validate_workspace_path, f"dir/{name}")
    assert (error.code, error.status) == ("path_invalid", 400)
    assert "255 bytes" in error.message


def test_it_refuses_a_path_or_code_with_a_lone_surrogate_with_a_typed_error() -> None:
    assert rejection(validate_workspace_path, "a\ud800.txt").code == "path_invalid"
    assert rejection(validate_code, "print('\udfff')", max_bytes=1000).code == "code_invalid"


def test_it_refuses_a_path_that_needs_a_stored_file_to_be_a_directory_or_the_reverse() -> None:
    assert validate_path_fits("a/b", conflicts=[]) == "a/b"
    error = rejection(validate_path_fits, "a/b", conflicts=["a"])
    assert (error.code, error.details["conflicts"]) == ("path_conflict", ["a"])


def test_it_accepts_extensions_that_are_not_configured_as_suspicious() -> None:
    assert validate_workspace_path("lib.exe.txt", suspicious_extensions=[".exe"]) == "lib.exe.txt"


def test_it_refuses_files_over_the_size_limit_with_413() -> None:
    assert validate_file_size(10, max_bytes=10) == 10
    error = rejection(validate_file_size, 11, max_bytes=10)
    assert (error.code, error.status) == ("file_too_large", 413)


# --- package specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("requests", ("requests", "requests")),
        ("requests==2.32.3", ("requests", "requests==2.32.3")),
        ("numpy>=1.26,<3", ("numpy", "numpy<3,>=1.26")),
        ("Django~=5.2", ("Django", "Django~=5.2")),
        ("uvicorn[standard]>=0.30", ("uvicorn", "uvicorn[standard]>=0.30")),
        ("zope.interface", ("zope.interface", "zope.interface")),
        ("six==1.*", ("six", "six==1.*")),
    ],
)
def test_it_accepts_pep508_pip_specs_and_rebuilds_them(
    spec: str, expected: tuple[str, str]
) -> None:
    assert validate_package_spec(spec, manager="pip") == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("left-pad", ("left-pad", "left-pad")),
        ("left-pad@1.3.0", ("left-pad", "left-pad@1.3.0")),
        ("lodash@^4.17.21", ("lodash", "lodash@^4.17.21")),
        ("@types/node@20.x", ("@types/node", "@types/node@20.x")),
        ("@scope/pkg", ("@scope/pkg", "@scope/pkg")),
        ("react@latest", ("react", "react@latest")),
        ("semver@>=7.0.0", ("semver", "semver@>=7.0.0")),
        ("chalk@4||5", ("chalk", "chalk@4||5")),
        ("ts-node@~10.9.2-beta.1", ("ts-node", "ts-node@~10.9.2-beta.1")),
    ],
)
def test_it_accepts_npm_names_with_an_optional_version_or_range(
    spec: str, expected: tuple[str, str]
) -> None:
    assert validate_package_spec(spec, manager="npm") == expected


@pytest.mark.parametrize(
    ("spec", "manager"),
    [
        ("-r requirements.txt", "pip"),
        ("--index-url=http://evil/simple", "pip"),
        ("-e.", "pip"),
        ("--registry=http://evil", "npm"),
        ("-g", "npm"),
    ],
)
def test_it_refuses_installer_options(spec: str, manager: str) -> None:
    assert rejection(validate_package_spec, spec, manager=manager).code == "package_spec_option"


@pytest.mark.parametrize(
    ("spec", "manager"),
    [
        ("https://example.com/pkg.tar.gz", "pip"),
        ("git+https://github.com/psf/requests", "pip"),
        ("requests @ https://example.com/requests.whl", "pip"),
        ("requests@https://example.com/r.whl", "pip"),
        ("hg+http://hg.example/x", "pip"),
        ("github:user/repo", "npm"),
        ("git+ssh://git@github.com/u/r.git", "npm"),
        ("lodash@npm:underscore@1", "npm"),
        ("https://registry.example/x.tgz", "npm"),
    ],
)
def test_it_refuses_urls_and_version_control_references(spec: str, manager: str) -> None:
    assert rejection(validate_package_spec, spec, manager=manager).code == "package_spec_url"


@pytest.mark.parametrize(
    ("spec", "manager"),
    [
        ("./mypkg", "pip"),
        ("/tmp/pkg", "pip"),
        ("~/pkg", "pip"),
        ("dist/pkg-1.0-py3-none-any.whl", "pip"),
        ("pkg-1.0.tar.gz", "pip"),
        ("../lib", "npm"),
        ("file:../lib", "npm"),
        ("lib.tgz", "npm"),
    ],
)
def test_it_refuses_local_files_and_paths(spec: str, manager: str) -> None:
    assert rejection(validate_package_spec, spec, manager=manager).code == "package_spec_local_path"


@pytest.mark.parametrize(
    ("spec", "manager"),
    [
        ("requests;rm", "pip"),
        ("requests&&id", "pip"),
        ("requests|id", "pip"),
        ("$(id)", "pip"),
        ("`id`", "pip"),
        ("requests ==2.0", "pip"),
        ("left-pad;id", "npm"),
        ("left-pad@$(id)", "npm"),
        ("left-pad'", "npm"),
        ("a\nb", "npm"),
    ],
)
def test_it_refuses_shell_metacharacters_and_whitespace(spec: str, manager: str) -> None:
    assert rejection(validate_package_spec, spec, manager=manager).code == "package_spec_shell"


@pytest.mark.parametrize(
    ("spec", "manager"),
    [
        ("", "pip"),
        ("-", "npm"),
        ("_private", "pip"),
        ("requests===", "pip"),
        ("requests>=", "pip"),
        ("requests; python_version<'3'", "pip"),
        ("Upper-Case", "npm"),
        (".hidden", "npm"),
        ("_under", "npm"),
        ("left-pad@", "npm"),
        ("left-pad@>=1.0.0 <2", "npm"),
        ("left-pad@1.2.3.4.5", "npm"),
        ("x" * 201, "pip"),
    ],
)
def test_it_refuses_specs_that_are_not_valid_names_or_versions(spec: str, manager: str) -> None:
    assert rejection(validate_package_spec, spec, manager=manager).code in {
        "package_spec_invalid",
        "package_spec_shell",
        "package_spec_option",
        "package_spec_local_path",
    }


def test_it_names_invalid_pip_versions_with_package_spec_invalid() -> None:
    assert (
        rejection(validate_package_spec, "requests>=", manager="pip").code == "package_spec_invalid"
    )
    assert (
        rejection(validate_package_spec, "Upper-Case", manager="npm").code == "package_spec_invalid"
    )


def test_it_refuses_denied_packages_by_canonical_name_and_ecosystem() -> None:
    deny = ["pip:python-nmap", "npm:evil-pkg", "cryptominer"]
    assert rejection(
        validate_package_spec, "Python_NMAP==1", manager="pip", deny_list=deny
    ).code == ("package_denied")
    assert rejection(validate_package_spec, "evil-pkg@1", manager="npm", deny_list=deny).code == (
        "package_denied"
    )
    assert rejection(validate_package_spec, "cryptominer", manager="npm", deny_list=deny).code == (
        "package_denied"
    )
    # An entry scoped to pip does not deny an npm package of the same name.
    assert validate_package_spec("python-nmap", manager="npm", deny_list=deny)[0] == "python-nmap"


def test_it_validates_an_install_request_as_a_whole() -> None:
    manager, specs = validate_package_specs(["six==1.17.0", "idna"], language="python")
    assert (manager, specs) == ("pip", ["six==1.17.0", "idna"])
    assert validate_package_specs(["left-pad"], language="typescript") == ("npm", ["left-pad"])


@pytest.mark.parametrize("specs", [[], "six", None, ["a"] * 21])
def test_it_refuses_install_requests_that_are_not_a_short_list(specs: object) -> None:
    assert rejection(validate_package_specs, specs, language="python").code == "packages_invalid"


def test_it_refuses_the_same_package_twice_in_one_request() -> None:
    error = rejection(validate_package_specs, ["Six", "six==1.0"], language="python")
    assert error.code == "packages_invalid"


def test_it_refuses_package_installs_for_bash() -> None:
    error = rejection(validate_package_specs, ["jq"], language="bash")
    assert error.code == "packages_unsupported_language"
