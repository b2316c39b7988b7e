"""Metrics fed from rows as they are saved, so no entry point has to remember to count.

(Refusals are counted where every one is recorded: execution/audit.py.)
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from execution.models import Execution, PackageInstall
from execution.monitoring import metrics

FINAL_INSTALL_STATUSES = frozenset(
    {
        PackageInstall.Status.SUCCEEDED,
        PackageInstall.Status.FAILED,
        PackageInstall.Status.REJECTED,
    }
)


@receiver(post_save, sender=Execution, dispatch_uid="monitor-rejected-run")
def count_rejected_run(sender: type, instance: Execution, created: bool, **_: Any) -> None:
    # A run refused before it started is created final; every other run is counted by the
    # run path when it ends (its final status is written with an UPDATE, not save()).
    if created and instance.status == Execution.Status.REJECTED:
        metrics.record_run_finished(
            status=instance.status, language=instance.language, source=instance.source
        )


@receiver(post_save, sender=PackageInstall, dispatch_uid="monitor-install")
def count_install(
    sender: type,
    instance: PackageInstall,
    created: bool,
    update_fields: frozenset[str] | None = None,
    **_: Any,
) -> None:
    if instance.status not in FINAL_INSTALL_STATUSES:
        return
    # Counted on the save that made it final: its creation (a refusal) or the status update.
    if created or (update_fields is not None and "status" in update_fields):
        metrics.record_install_finished(language=instance.language, outcome=instance.status)
