"""The landing page: the summary line, what comes first, words for skipped probes,
runbook links, and no secret or token anywhere on it.

Most tests build provider states directly and render at a fixed time; the last
ones fetch the page from a running exporter.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from pydantic import SecretStr

from exporter.config import Config, parse_config
from exporter.errors import ALL_ERROR_CLASSES, ErrorClass
from exporter.simulator import Simulation
from exporter.state import ProviderState
from exporter.tokens import Token
from exporter.web.landing import (
    PROBE_RUNBOOK,
    PROBE_RUNBOOK_DEFAULT,
    RUNBOOK_URL,
    TOKEN_RUNBOOK,
    TOKEN_RUNBOOK_DEFAULT,
    render_landing_page,
)
from tests.harness import running_exporter, wait_for

NOW = 1_900_000_000.0
ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Landing-Value"


def providers(*names: str, secret_expires: str | None = None) -> Config:
    lines = ["providers:"]
    for name in names:
        lines += [
            f"  - name: {name}", "    preset: generic",
            "    token_url: https://id.example.com/oauth/token",
            "    client_id: cid", f"    client_secret: {SECRET}",
        ]
        if secret_expires:
            lines.append(f"    client_secret_expires_at: {secret_expires}")
        lines += ["    probes:",
                  "      - name: api", "        url: https://api.example.com/v1/things"]
    return parse_config("\n".join(lines) + "\n", "landing.yaml", {})


def token(expires_in: float = 3000.0, value: str = "tok-abc") -> Token:
    return Token(SecretStr(value), NOW - 600, NOW + expires_in, None, "expires_in")


def healthy(state: ProviderState) -> ProviderState:
    state.token = token()
    state.completed = state.attempts = 1
    state.next_renewal = NOW + 1800
    for ps in state.probes.values():
        ps.success, ps.status, ps.last_run, ps.attempts = True, 200, NOW - 5, 1
    return state


def page(states: list[ProviderState]) -> str:
    return render_landing_page(states, NOW).decode()


def rows(html: str) -> list[str]:
    return re.findall(r'data-provider="([^"]+)"', html)


def row_html(html: str, name: str) -> str:
    match = re.search(rf'<tr [^>]*data-provider="{name}">(.*?)</tr>', html, re.DOTALL)
    assert match, name
    return match.group(1)


def test_summary_first_and_failing_rows_first() -> None:
    config = providers("alpha", "bravo", "charlie", "delta", "echo")
    st = {p.name: ProviderState(p) for p in config.providers}
    for name in ("alpha", "charlie", "echo"):
        healthy(st[name])
    # delta's renewal keeps failing while its token is still valid.
    healthy(st["delta"])
    st["delta"].consecutive_failures, st["delta"].last_error = 3, ErrorClass.INVALID_CLIENT
    # echo's probe fails although its token is good.
    probe = st["echo"].probes["api"]
    probe.success, probe.status, probe.last_error = False, 403, ErrorClass.INSUFFICIENT_SCOPE
    # bravo has not heard back from its first token request.

    html = page(list(st.values()))
    summary = re.search(r'id="summary">([^<]*)<', html)
    assert summary and summary.group(1) == ("2 of 5 credentials need attention; "
                                            "1 waiting for a first token.")
    assert html.index('id="summary"') < html.index("<table")
    assert rows(html) == ["delta", "echo", "bravo", "alpha", "charlie"]
    assert 'class="attention"' in html.split('data-provider="delta"')[0].rsplit("<tr", 1)[1]
    assert 'class="pending">pending' in row_html(html, "bravo")


def test_summary_wording() -> None:
    one = providers("solo")
    state = ProviderState(one.providers[0])
    state.completed = 1  # answered, no token: needs attention
    assert ">1 of 1 credential needs attention.<" in page([state])
    assert ">0 of 1 credential need attention.<" in page([healthy(ProviderState(
        one.providers[0]))])
    assert ">No credentials configured.<" in page([])


def test_a_skipped_probe_says_why_and_shows_no_status() -> None:
    config = providers("lapsed")
    state = ProviderState(config.providers[0])
    state.token, state.completed = token(expires_in=-60), 3
    state.consecutive_failures, state.last_error = 3, ErrorClass.CONNECTION_ERROR
    probe = state.probes["api"]
    probe.success, probe.status, probe.last_error = False, 0, ErrorClass.NO_TOKEN
    probe.last_run = NOW - 10
    html = row_html(page([state]), "lapsed")
    assert "api: skipped (no valid token)" in html
    assert "HTTP 0" not in html and "HTTP" not in html.split("api:")[1]
    assert f'{RUNBOOK_URL}#tokenhealthnovalidtoken' in html.split("api:")[1]
    assert 'class="expired">expired' in html


def test_a_skip_reason_from_the_scheduler_is_shown_as_given() -> None:
    """A scheduler that records why it skipped a run (``skip_reason``) is quoted."""
    config = providers("paused", "classed")
    paused, classed = (healthy(ProviderState(p)) for p in config.providers)
    for state, reason in ((paused, "no valid token: the token endpoint is failing "
                                   "(server_error)"), (classed, "rate_limited")):
        probe = state.probes["api"]
        probe.success, probe.status, probe.last_error = False, 0, ErrorClass.NO_TOKEN
        probe.skip_reason = reason
    html = page([paused, classed])
    assert ("api: skipped (no valid token: the token endpoint is failing (server_error))"
            in row_html(html, "paused"))
    assert "api: skipped (rate limited)" in row_html(html, "classed")
    assert f"{RUNBOOK_URL}#tokenhealthnovalidtoken" in row_html(html, "paused")


def test_probe_without_an_answer_and_not_yet_run() -> None:
    config = providers("net", "fresh")
    down = healthy(ProviderState(config.providers[0]))
    ps = down.probes["api"]
    ps.success, ps.status, ps.last_error = False, 0, ErrorClass.TIMEOUT
    fresh = ProviderState(config.providers[1])
    fresh.token, fresh.completed = token(), 1
    html = page([down, fresh])
    assert "api: failing (no answer, timeout)" in row_html(html, "net")
    assert "api: not run yet<" in row_html(html, "fresh")
    assert "HTTP 0" not in html


def test_every_error_class_links_to_an_existing_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("## ")
    }
    anchors = {TOKEN_RUNBOOK.get(e, TOKEN_RUNBOOK_DEFAULT) for e in ALL_ERROR_CLASSES}
    anchors |= {PROBE_RUNBOOK.get(e, PROBE_RUNBOOK_DEFAULT) for e in ALL_ERROR_CLASSES}
    assert anchors <= headings, anchors - headings


def test_rows_link_the_runbook_for_their_error_class() -> None:
    config = providers("creds", "limited", "scope")
    creds, limited, scope = (healthy(ProviderState(p)) for p in config.providers)
    creds.token, creds.completed = None, 4
    creds.consecutive_failures, creds.last_error = 4, ErrorClass.INVALID_CLIENT
    limited.consecutive_failures, limited.last_error = 1, ErrorClass.RATE_LIMITED
    ps = scope.probes["api"]
    ps.success, ps.status, ps.last_error = False, 403, ErrorClass.INSUFFICIENT_SCOPE
    html = page([creds, limited, scope])
    assert (f'invalid_client (<a href="{RUNBOOK_URL}#tokenhealthcredentialsrejected">'
            "runbook</a>)") in row_html(html, "creds")
    assert f"{RUNBOOK_URL}#tokenhealthtokenendpointratelimited" in row_html(html, "limited")
    probe_line = row_html(html, "scope").split("api:")[1]
    assert "failing (HTTP 403, insufficient_scope)" in probe_line
    assert f"{RUNBOOK_URL}#tokenhealthscoperejected" in probe_line
    # A healthy row carries no runbook link.
    assert "runbook" not in row_html(page([healthy(ProviderState(config.providers[0]))]),
                                     "creds")


def test_fresh_tokens_refused_and_expiring_secrets_are_said_in_words() -> None:
    # NOW is 2030-03-17T17:46Z: the secret has three days left.
    config = providers("refused", "old-secret", secret_expires="2030-03-20T00:00:00Z")
    refused, old = (healthy(ProviderState(p)) for p in config.providers)
    refused.refused_fresh = True
    html = page([refused, old])
    assert "The API refuses freshly obtained tokens too" in row_html(html, "refused")
    assert "The client secret expires in under 14 days." in row_html(html, "old-secret")
    assert 'class="bad">2 days' in row_html(html, "old-secret")
    assert re.search(r'id="summary">2 of 2 credentials need attention', html)


def test_names_are_escaped() -> None:
    """Config validation keeps markup out of names; the template escapes regardless."""
    config = providers("ok-name")
    state = healthy(ProviderState(config.providers[0]))
    probe = state.probes["api"]
    probe.probe = replace(probe.probe, name="<script>alert(1)</script>")
    html = page([state])
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_no_secret_or_token_on_the_live_page(simulation: Simulation) -> None:
    sim = simulation.providers["simplestore"]
    sim.add_client("landing-client", SECRET)
    config = (
        "providers:\n  - name: store\n    preset: simplestore\n"
        f"    token_url: {sim.token_url}\n    client_id: landing-client\n"
        "    client_secret: ${STORE_SECRET}\n"
        "  - name: wrong\n    preset: simplestore\n"
        f"    token_url: {sim.token_url}\n    client_id: landing-client\n"
        "    client_secret: not-the-secret-Zq9\n"
    )
    with running_exporter(config, env={"STORE_SECRET": SECRET}, log_level="info") as h:
        wait_for(h.exporter.ready, message="first token attempts")
        wait_for(lambda: h.tokens, message="a token")
        html = h.get("/").text
    assert SECRET not in html and "not-the-secret-Zq9" not in html
    for value in h.tokens:
        assert value not in html
    assert rows(html)[0] == "wrong"  # refused credentials come first
    assert "1 of 2 credentials needs attention" in html
