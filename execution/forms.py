"""Forms of the browser workspace: they check the shape of what a person typed.

What a value may be (workspace paths, package specs, sizes) is decided by the execution
services' validation; the views turn its ToolErrors into form errors, so the page and the
API refuse exactly the same things with the same words.
"""

from __future__ import annotations

import re

from django import forms

from execution.models import Thread

# Package specs are typed as one line: split on spaces and commas.
_SPEC_SEPARATORS = re.compile(r"[\s,]+")


class ThreadTitleForm(forms.ModelForm):
    """Create or rename a thread: a title of at most 200 characters."""

    class Meta:
        model = Thread
        fields = ["title"]
        widgets = {"title": forms.TextInput(attrs={"autocomplete": "off"})}
        # The form field strips spaces, so a blank title is a missing one.
        error_messages = {"title": {"required": "Give the thread a title."}}


class ThreadSearchForm(forms.Form):
    """The thread list's search box (case-insensitive match in titles)."""

    q = forms.CharField(required=False, max_length=200, label="Search threads")


class NewFileForm(forms.Form):
    """A new, empty workspace file at `path`."""

    path = forms.CharField(max_length=1024, label="New file")


class SaveFileForm(forms.Form):
    """The editor's text saved to `path` (created or replaced)."""

    path = forms.CharField(max_length=1024)
    # strip=False: trailing newlines and indentation are part of a file.
    content = forms.CharField(required=False, strip=False)


class FilePathForm(forms.Form):
    """One existing workspace file, e.g. to delete it."""

    path = forms.CharField(max_length=1024)


class UploadFileForm(forms.Form):
    """An uploaded file, stored at `path` or, without one, under its own name."""

    file = forms.FileField(label="Upload")
    path = forms.CharField(required=False, max_length=1024, label="Save as (optional)")


class PackageInstallForm(forms.Form):
    """Packages to install: pip for Python, npm for JavaScript and TypeScript."""

    LANGUAGES = [("python", "Python (pip)"), ("javascript", "JavaScript / TypeScript (npm)")]

    language = forms.ChoiceField(choices=LANGUAGES, initial="python")
    packages = forms.CharField(
        max_length=2000,
        label="Packages",
        help_text="Names with optional versions, separated by spaces, e.g. six==1.17.0",
    )

    def clean_packages(self) -> list[str]:
        specs = [spec for spec in _SPEC_SEPARATORS.split(self.cleaned_data["packages"]) if spec]
        if not specs:
            raise forms.ValidationError("Name at least one package.", code="required")
        return specs
