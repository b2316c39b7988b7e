"""Monitoring of the Django side: Prometheus metrics, what each run cost, readiness and the
operator's checks, request and run logs, daily budgets and the staff dashboard."""
