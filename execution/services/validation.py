"""Policy checks on everything a caller sends before it reaches a sandbox (README, "Security").

Pure functions: each takes the value and the limits it needs as arguments (callers pass the
settings), returns the normalised value, or raises `ValidationRejected` with a stable code.
They are a policy and audit aid, not the security boundary: the sandbox is the boundary, so
these rules aim at clear refusals and a useful audit trail, and must never be the only thing
standing between user code and the host.
"""

from __future__ import annotations

import functools
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from execution.services.errors import ValidationRejected

LANGUAGES: tuple[str, ...] = ("python", "javascript", "typescript", "bash")
# Short names people and agents commonly send; normalised to the canonical language.
LANGUAGE_ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "sh": "bash",
    "shell": "bash",
}

# The sandbox's working directory: the only place file operations may touch.
WORKSPACE_ROOT = "/home/user"
MAX_PATH_CHARS = 1024  # WorkspaceFile.path max_length
# NAME_MAX on Linux counts bytes of the name's UTF-8 encoding, not characters: 128 "é" are
# 256 bytes, which the sandbox's filesystem cannot hold.
MAX_PATH_COMPONENT_BYTES = 255
# Top-level directories of a Linux system: an absolute path into them is refused with its own
# code, because asking for /etc/passwd or /dev/sda is worth a distinct audit entry.
SYSTEM_ROOTS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "opt", "proc", "root", "run",
     "sbin", "srv", "sys", "tmp", "usr", "var", "mnt", "media"}
)  # fmt: skip

MAX_PACKAGES_PER_REQUEST = 20
MAX_PACKAGE_SPEC_CHARS = 200
PACKAGE_LANGUAGES: dict[str, str] = {
    "python": "pip",
    "javascript": "npm",
    "typescript": "npm",
}

# PEP 508 names: letters/digits at both ends, . _ - inside (case-insensitive).
_PEP508_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# npm names: lowercase, URL-safe, optional @scope/, no leading . or _ (npm's own rules).
_NPM_NAME = re.compile(r"^(@[a-z0-9~-][a-z0-9._~-]*/)?[a-z0-9~-][a-z0-9._~-]*$")
_NPM_NAME_MAX = 214
# One semver comparator: optional operator, version with x/* wildcards, prerelease, build.
_SEMVER_PART = r"(0|[1-9][0-9]*|[xX*])"
_SEMVER = (
    rf"v?{_SEMVER_PART}(\.{_SEMVER_PART}){{0,2}}"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
_NPM_COMPARATOR = re.compile(rf"^(\^|~|>=|<=|>|<|=)?{_SEMVER}$")
_NPM_DIST_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
# Characters a shell would interpret. Specs never reach a shell (argv + shlex.join), but a
# spec carrying them is an injection attempt or a mistake, and either is worth refusing.
_SHELL_METACHARACTERS = frozenset(";&|`$(){}[]<>'\"\\!*?#\n\r\t ~")
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+", "git:", "github:", "gitlab:", "bitbucket:")


def _reject(code: str, message: str, status: int = 400, **details: object) -> ValidationRejected:
    return ValidationRejected(code, message, dict(details), status)


# --- languages and code ---------------------------------------------------------------------


def validate_language(language: object) -> str:
    """Return the canonical language name; raise `unsupported_language` otherwise."""
    if not isinstance(language, str) or not language.strip():
        raise _reject("unsupported_language", "A language is required.", allowed=list(LANGUAGES))
    name = language.strip().lower()
    name = LANGUAGE_ALIASES.get(name, name)
    if name not in LANGUAGES:
        raise _reject(
            "unsupported_language",
            f"Language {language!r} is not supported; use one of: {', '.join(LANGUAGES)}.",
            language=language,
            allowed=list(LANGUAGES),
        )
    return name


@functools.lru_cache(maxsize=32)
def _compiled_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    # Compiled once per distinct configuration; a bad pattern fails loudly at first use,
    # naming the setting, rather than silently matching nothing.
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.MULTILINE))
        except re.error as exc:
            raise ValueError(
                f"EXECUTION_DANGEROUS_PATTERNS has an invalid regex {pattern!r}: {exc}"
            ) from exc
    return tuple(compiled)


def validate_code(code: object, *, max_bytes: int, dangerous_patterns: Sequence[str] = ()) -> str:
    """Return the code unchanged when it is non-empty text within `max_bytes` (UTF-8) and
    matches none of `dangerous_patterns` (regexes, searched line-wise).

    Raises `code_invalid` (not text / NUL), `code_empty`, `code_too_large` (413) or
    `dangerous_pattern`.
    """
    if not isinstance(code, str):
        raise _reject("code_invalid", "Code must be text.")
    if "\x00" in code:
        raise _reject("code_invalid", "Code must not contain NUL characters.")
    if not _is_unicode(code):
        raise _reject("code_invalid", "Code must be valid Unicode text (no lone surrogates).")
    if not code.strip():
        raise _reject("code_empty", "There is no code to run.")
    size = len(code.encode("utf-8"))
    if size > max_bytes:
        raise _reject(
            "code_too_large",
            f"The code is {size} bytes; the limit is {max_bytes} bytes.",
            413,
            size=size,
            limit=max_bytes,
        )
    for pattern in _compiled_patterns(tuple(dangerous_patterns)):
        match = pattern.search(code)
        if match:
            raise _reject(
                "dangerous_pattern",
                "The code matches a pattern this server does not allow.",
                pattern=pattern.pattern,
                match=match.group(0)[:100],
            )
    return code


# How much of a refused run's code is kept with its record: enough to recognise it, never
# the whole body of a request refused for its size.
REFUSED_CODE_EXCERPT_CHARS = 1024


def refused_run_record(code: object, language: object) -> tuple[str, str]:
    """What a refused run stores as (code, language): at most REFUSED_CODE_EXCERPT_CHARS of
    the code, and the language only when it is one of ours (else "")."""
    text = code if isinstance(code, str) else ""
    known = language if isinstance(language, str) and language in LANGUAGES else ""
    return text[:REFUSED_CODE_EXCERPT_CHARS], known


def validate_timeout(timeout: object, *, default: float, maximum: float) -> float:
    """Return the run's timeout in seconds: `default` when None, else a number in (0, maximum].

    Raises `timeout_invalid` for a non-number and `timeout_out_of_range` outside the bounds.
    """
    if timeout is None:
        return min(default, maximum)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise _reject("timeout_invalid", "The timeout must be a number of seconds.")
    value = float(timeout)
    if not (value > 0 and value <= maximum):  # also refuses NaN
        raise _reject(
            "timeout_out_of_range",
            f"The timeout must be more than 0 and at most {maximum:g} seconds.",
            timeout=value if value == value else None,
            maximum=maximum,
        )
    return value


# --- workspace paths ------------------------------------------------------------------------


def validate_workspace_path(path: object, *, suspicious_extensions: Iterable[str] = ()) -> str:
    """Return the path relative to the workspace (`/home/user`), normalised (no `.`, no `//`).

    Accepts `a/b.txt`, `./a/b.txt` and `/home/user/a/b.txt` alike. Raises `path_invalid`
    (empty, not text, too long, the workspace itself), `path_control_characters`,
    `path_traversal` (any `..`), `path_system` (absolute into /etc, /dev, /proc, …),
    `path_outside_workspace` (any other absolute path, `~`) or `path_suspicious_extension`.
    """
    if not isinstance(path, str) or not path.strip():
        raise _reject("path_invalid", "A file path is required.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in path):
        # Control and format characters (NUL, newlines, bidi overrides) make a path that
        # reads differently from what it is; no legitimate workspace file needs them.
        raise _reject(
            "path_control_characters", "The path contains control or invisible characters."
        )
    if len(path) > MAX_PATH_CHARS:
        raise _reject(
            "path_invalid", f"The path is longer than {MAX_PATH_CHARS} characters.", status=400
        )
    if path.startswith("~"):
        raise _reject(
            "path_outside_workspace",
            "Use a path relative to the workspace (e.g. data/input.csv), not `~`.",
            path=path,
        )
    parts = path.split("/")
    if ".." in parts:
        raise _reject("path_traversal", "The path may not contain `..`.", path=path)
    if path.startswith("/"):
        normalised = posixpath.normpath(path)
        if normalised == WORKSPACE_ROOT:
            raise _reject("path_invalid", "The path names the workspace itself, not a file.")
        if not normalised.startswith(WORKSPACE_ROOT + "/"):
            top = normalised.lstrip("/").split("/", 1)[0]
            if top in SYSTEM_ROOTS:
                raise _reject(
                    "path_system",
                    f"System paths such as /{top} cannot be read or written.",
                    path=path,
                )
            raise _reject(
                "path_outside_workspace",
                f"Only files inside the workspace ({WORKSPACE_ROOT}) can be used.",
                path=path,
            )
        relative = normalised[len(WORKSPACE_ROOT) + 1 :]
    else:
        relative = posixpath.normpath(path)
    if relative in ("", "."):
        raise _reject("path_invalid", "The path names the workspace itself, not a file.")
    if not _is_unicode(relative):
        raise _reject("path_invalid", "The path must be valid Unicode text.")
    for component in relative.split("/"):
        if len(component.encode("utf-8")) > MAX_PATH_COMPONENT_BYTES:
            raise _reject(
                "path_invalid",
                f"A file or directory name is longer than {MAX_PATH_COMPONENT_BYTES} bytes "
                "(UTF-8), more than the filesystem holds.",
            )
    # What Windows would make of the name: it drops trailing dots and spaces and reads
    # `name:stream` as the file `name`, so `x.exe.`, `x.exe ` and `x.exe::$DATA` are x.exe.
    name = relative.rsplit("/", 1)[-1].split(":", 1)[0].rstrip(". ").lower()
    for extension in suspicious_extensions:
        ext = extension.lower() if extension.startswith(".") else "." + extension.lower()
        if name.endswith(ext):
            raise _reject(
                "path_suspicious_extension",
                f"Files ending in {ext} are not accepted in the workspace.",
                path=path,
                extension=ext,
            )
    return relative


def _is_unicode(text: str) -> bool:
    # A str can hold lone surrogates (from JSON `"\ud800"`), which no file name, database
    # or UTF-8 stream can; they are refused at the door with a typed error.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_ancestors(path: str) -> list[str]:
    """The directories above a relative workspace path: `a/b/c` → [`a`, `a/b`]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def validate_path_fits(path: str, *, conflicts: Iterable[str]) -> str:
    """Return `path` when no stored file stands in its way; raise `path_conflict` otherwise.

    `conflicts` are the thread's stored paths that are an ancestor of `path` (a file where a
    directory must be) or lie under it (a directory where a file must be): a filesystem
    cannot hold both, so the second would make every later restore of the thread fail.
    """
    found = sorted(conflicts)
    if found:
        raise _reject(
            "path_conflict",
            f"{path!r} cannot be stored next to the workspace's {found[0]!r}: one would have "
            "to be both a file and a directory.",
            path=path,
            conflicts=found[:10],
        )
    return path


def validate_file_size(size: int, *, max_bytes: int) -> int:
    """Return `size` when within `max_bytes`; raise `file_too_large` (413) otherwise."""
    if size > max_bytes:
        raise _reject(
            "file_too_large",
            f"The file is {size} bytes; the limit is {max_bytes} bytes.",
            413,
            size=size,
            limit=max_bytes,
        )
    return size


# --- package specs --------------------------------------------------------------------------


def package_manager_for(language: str) -> str:
    """Return "pip" or "npm" for a language; raise `packages_unsupported_language` for bash."""
    manager = PACKAGE_LANGUAGES.get(language)
    if manager is None:
        raise _reject(
            "packages_unsupported_language",
            f"Packages can be installed for python (pip) and javascript/typescript (npm), "
            f"not {language}.",
            language=language,
        )
    return manager


def _denied(name: str, manager: str, deny_list: Iterable[str]) -> bool:
    # Entries are "name" (any ecosystem) or "pip:name" / "npm:name".
    for entry in deny_list:
        scope, _, denied_name = entry.rpartition(":") if ":" in entry else ("", "", entry)
        if scope and scope != manager:
            continue
        if manager == "pip" and canonicalize_name(denied_name) == canonicalize_name(name):
            return True
        if manager == "npm" and denied_name.lower() == name.lower():
            return True
    return False


def _check_spec_shape(spec: str, manager: str) -> None:
    """The rules common to pip and npm: no option, URL, VCS, local path or shell syntax."""
    if spec.startswith("-"):
        raise _reject(
            "package_spec_option", "Installer options are not accepted, only package names.",
            spec=spec,
        )  # fmt: skip
    lowered = spec.lower()
    if "://" in lowered or lowered.startswith(_VCS_PREFIXES) or " @ " in lowered:
        raise _reject(
            "package_spec_url", "URLs and version-control references are not accepted.",
            spec=spec,
        )  # fmt: skip
    allowed_by_manager = {"pip": set("<>!*[]~"), "npm": set("<>|*~")}[manager]
    bad = sorted({ch for ch in spec if ch in _SHELL_METACHARACTERS} - allowed_by_manager)
    if bad or any(ch.isspace() for ch in spec):
        raise _reject(
            "package_spec_shell",
            "Package specs may contain no spaces or shell characters; write e.g. "
            + ("requests==2.32.3." if manager == "pip" else "left-pad@^1.3.0."),
            spec=spec,
            characters=bad or [" "],
        )
    if (
        spec.startswith((".", "/", "~"))
        or "\\" in spec
        or (manager == "pip" and "/" in spec)
        or lowered.startswith("file:")
        or lowered.endswith((".whl", ".tar.gz", ".zip", ".tgz"))
    ):
        raise _reject(
            "package_spec_local_path", "Local files and paths are not accepted.", spec=spec
        )
    # npm specs use : only in aliases/protocols (npm:, file:, github:), all refused here.
    if manager == "npm" and ":" in spec:
        raise _reject(
            "package_spec_url", "Aliases, URLs and protocols are not accepted.", spec=spec
        )


def _validate_pip_spec(spec: str) -> tuple[str, str]:
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise _reject(
            "package_spec_invalid", f"{spec!r} is not a valid pip requirement: {exc}", spec=spec
        ) from exc
    if requirement.url:
        raise _reject("package_spec_url", "URL requirements are not accepted.", spec=spec)
    if requirement.marker is not None:
        raise _reject("package_spec_invalid", "Environment markers are not accepted.", spec=spec)
    if not _PEP508_NAME.match(requirement.name):
        raise _reject("package_spec_invalid", f"{requirement.name!r} is not a valid name.")
    # Rebuilt from the parsed parts, so what runs is exactly what was checked.
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return requirement.name, f"{requirement.name}{extras}{requirement.specifier}"


def _validate_npm_spec(spec: str) -> tuple[str, str]:
    # The version separator is the last "@" that is not the scope's leading one.
    at = spec.rfind("@")
    if at > 0:
        name, version = spec[:at], spec[at + 1 :]
        if not version:
            raise _reject("package_spec_invalid", "A version must follow `@`.", spec=spec)
    else:
        name, version = spec, ""
    if len(name) > _NPM_NAME_MAX or not _NPM_NAME.match(name):
        raise _reject(
            "package_spec_invalid",
            f"{name!r} is not a valid npm package name (lowercase, URL-safe, optional @scope/).",
            spec=spec,
        )
    if version:
        alternatives = version.split("||")
        if not all(_NPM_COMPARATOR.match(alt) or _NPM_DIST_TAG.match(alt) for alt in alternatives):
            raise _reject(
                "package_spec_invalid",
                f"{version!r} is not a valid npm version, range or tag.",
                spec=spec,
            )
    return name, spec


def validate_package_spec(
    spec: object, *, manager: str, deny_list: Iterable[str] = ()
) -> tuple[str, str]:
    """Return (name, normalised spec) for one pip or npm package spec.

    A spec is a name plus an optional version (pip: PEP 508 name, extras, specifiers;
    npm: name or @scope/name, then @version, range or dist-tag). Raises `package_spec_invalid`,
    `package_spec_option`, `package_spec_url` (URLs, VCS), `package_spec_local_path`,
    `package_spec_shell` or `package_denied`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _reject("package_spec_invalid", "A package name is required.")
    spec = spec.strip()
    if len(spec) > MAX_PACKAGE_SPEC_CHARS:
        raise _reject(
            "package_spec_invalid",
            f"A package spec may be at most {MAX_PACKAGE_SPEC_CHARS} characters.",
        )
    if any(unicodedata.category(ch) == "Cc" for ch in spec):
        raise _reject("package_spec_shell", "The package spec contains control characters.")
    _check_spec_shape(spec, manager)
    name, normalised = _validate_pip_spec(spec) if manager == "pip" else _validate_npm_spec(spec)
    if _denied(name, manager, deny_list):
        raise _reject(
            "package_denied", f"Installing {name!r} is not allowed on this server.", name=name
        )
    return name, normalised


def validate_package_specs(
    specs: object, *, language: str, deny_list: Iterable[str] = ()
) -> tuple[str, list[str]]:
    """Return (manager, normalised specs) for an install request of 1..20 unique packages.

    Raises `packages_invalid` (not a non-empty list, too many, duplicates),
    `packages_unsupported_language`, or any error of `validate_package_spec`.
    """
    manager = package_manager_for(language)
    if not isinstance(specs, list | tuple) or not specs:
        raise _reject("packages_invalid", "Give a non-empty list of package names.")
    if len(specs) > MAX_PACKAGES_PER_REQUEST:
        raise _reject(
            "packages_invalid",
            f"At most {MAX_PACKAGES_PER_REQUEST} packages can be installed at once.",
            count=len(specs),
        )
    deny = tuple(deny_list)
    seen: set[str] = set()
    normalised: list[str] = []
    for spec in specs:
        name, clean = validate_package_spec(spec, manager=manager, deny_list=deny)
        key = canonicalize_name(name) if manager == "pip" else name
        if key in seen:
            raise _reject("packages_invalid", f"{name!r} is listed twice.", name=name)
        seen.add(key)
        normalised.append(clean)
    return manager, normalised
