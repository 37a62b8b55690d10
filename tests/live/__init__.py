"""The dashboard and the alert rules, live: a real Prometheus scrapes a real exporter.

Set-up, once for the package (about half a minute in all; ``stack.py`` says
what runs, ``conftest.py`` starts it):

- the five provider simulators run in this process, with token lifetimes of
  20-24 s so that renewals (the token-time-left sawtooth) happen while we watch;
- the exporter runs as a subprocess (``python -m exporter``) against them,
  probing every 1-2 s, with a fast backoff so that faults show at once;
- Prometheus 2.42 (Debian's ``prometheus`` package) scrapes it every second
  as job ``token-health-exporter`` and evaluates a test copy of
  ``alerts/token-health.rules.yml`` in which every ``for:`` is 1 s.

The ``healthy`` fixture waits until every provider has renewed a token while
Prometheus watched, collecting every alert that went pending or firing on the
way, then asks Prometheus every dashboard query and every alert expression
once. Every module that needs health reads that snapshot, so it always
describes the time before any fault, whatever order the modules run in.

- ``test_live_alerts.py``: every alert expression is empty while healthy, every
  rule evaluates without error, and no alert is pending or firing at any time.
  Every alert, not only the health-sensitive ones, must be quiet: the set-up
  gives none a cause (the one client secret expires in a year, every requested
  scope is granted, no probe expects a refusal such as SimpleDocs' read-only
  write probe in --demo).
- ``test_live_contract.py``: every metric the dashboard and the rules read is
  on the exporter's ``/metrics`` and in Prometheus, and tests/promql.py's list
  of the SPEC's metrics is what the exporter exports.
- ``test_live_dashboard.py``: every dashboard query evaluates, and the ones that
  describe health return the expected series and values
  (``DASHBOARD_EXPECTATIONS`` says which and why).
- ``test_live_faults.py`` (last by name, as it breaks a provider): SimpleStore
  starts refusing the exporter's client credentials and revokes its token;
  TokenHealthNoValidToken fires for that provider only (with for: 1s, pending
  lasts one evaluation), TokenHealthCredentialsRejected is held back by the
  root-cause hierarchy although its own condition holds (docs/alerts.md), the
  dashboard shows the fault (providers without a valid token, failures by
  class, a probe success ratio below 1, never -Inf), and the alert resolves
  when the fault is cleared. Its last test reads both logs.

Nothing is skipped: without ``/usr/bin/prometheus`` the tests fail and say how
to install it.
"""
