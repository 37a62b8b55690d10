// The TokenHealth alerts. docs/alerts.md explains the design: the severity
// policy, the root-cause layers and which alert each failure raises.
//
// Every alert carries two labels: `severity` (critical, warning, info) and
// `layer`, its place in the root-cause hierarchy:
//
//   token           no valid token                    (the integration is down)
//   token_endpoint  token requests failing            (it goes down at expiry)
//   probe           the API fails with a valid token
//   expiry          a client secret or certificate runs out
//   exporter        the exporter itself (outside the hierarchy)
//
// While a critical condition of a higher layer holds for a credential, the
// alerts of every lower layer are held back by `unless on (...)` clauses
// (when hierarchyInRules), and the Alertmanager inhibit rules in
// examples/alertmanager do the same with the `layer` label. Within a layer
// the rules are written so that one cause matches one alert.
local promql = import '../lib/promql.libsonnet';

{
  local cfg = $._config,
  local sel(metric, extra=[]) = promql.sel(cfg.tokenHealthSelector, metric, extra),
  local ind = promql.indent,
  local on = 'on (%s)' % std.join(', ', [cfg.clusterLabel] + cfg.providerLabels),
  local onProbe = 'on (%s)' % std.join(', ', [cfg.clusterLabel] + cfg.providerLabels + ['probe']),
  local secs = promql.seconds,
  local days(n) = n * 86400,
  local pct(ratio) = '%d %%' % std.round(ratio * 100),
  local minutes(d) =
    local s = secs(d);
    if s % 3600 == 0 then '%d hour%s' % [s / 3600, if s == 3600 then '' else 's']
    else '%d minutes' % (s / 60),

  // Error classes (SPEC) by what they say about a token request or probe.
  local credentialClasses = ['invalid_client', 'unauthorized_client', 'invalid_grant', 'unsupported_grant_type'],
  local tokenRefusedClasses = ['invalid_token', 'token_expired', 'token_revoked'],
  local re(classes) = 'error=~"%s"' % std.join('|', classes),

  // ------------------------------------------------------------ conditions
  // One expression per critical cause, per credential. The alerts below use
  // them, and the hierarchy clauses hold lower layers back while they match.
  local cond = {
    tokenInvalid: '%s == 0' % sel('oauth_token_valid'),
    noValidToken: |||
      %s
      unless %s
      %s == 1
    ||| % [self.tokenInvalid, on, sel('oauth_token_pending')],
    firstTokenPending: '%s == 1' % sel('oauth_token_pending'),
    credentialsRejected: '%s == 1' % sel('oauth_token_refresh_last_error', [re(credentialClasses)]),
    scopeRejected: '%s == 1' % sel('oauth_token_refresh_last_error', ['error="invalid_scope"']),
    renewalFailing: '%s > 0' % sel('oauth_token_refresh_consecutive_failures'),
    shortRunway: '%s - time() < %d' % [sel('oauth_token_expiration_timestamp_seconds'), cfg.renewalRunwaySeconds],
    expiresSoon: |||
      (%(runway)s)
      and %(on)s
      (%(failing)s)
      unless %(on)s
      (
        %(cred)s
        or
        %(scope)s
      )
    ||| % {
      runway: cond.shortRunway,
      on: on,
      failing: cond.renewalFailing,
      cred: cond.credentialsRejected,
      scope: cond.scopeRejected,
    },
    apiRefusesToken: 'count without (probe, error) (%s == 1)' % sel('oauth_probe_last_error', [re(tokenRefusedClasses)]),
    probeFailing: |||
      %s > 0
      unless %s
      %s == 1
    ||| % [
      sel('oauth_probe_consecutive_failures'),
      onProbe,
      sel('oauth_probe_last_error', [re(['no_token'] + tokenRefusedClasses)]),
    ],
  },

  // What each layer is held back by: the critical conditions above it.
  local above = {
    token_endpoint: [cond.tokenInvalid],
    probe: self.token_endpoint + [cond.credentialsRejected, cond.scopeRejected, cond.expiresSoon],
    expiry: self.probe + [
      cond.apiRefusesToken,
      'count without (probe) (\n  %s\n)' % ind(cond.probeFailing, 2),
    ],
  },

  local hold(layer, expr) =
    if !cfg.hierarchyInRules || !std.objectHas(above, layer) then promql.trim(expr)
    else
      local causes =
        if std.length(above[layer]) == 1 then above[layer]
        else ['(\n  %s\n)' % ind(c, 2) for c in above[layer]];
      |||
        (
          %s
        )
        unless %s
        (
          %s
        )
      ||| % [ind(expr, 2), on, ind(std.join('\nor\n', causes), 2)],

  local alert(name, layer, expr, forDuration, summary, description, extraLabels={}) = {
    alert: name,
    expr: promql.trim(hold(layer, expr)),
    'for': forDuration,
    labels: { severity: cfg.alertSeverities[name], layer: layer } + extraLabels,
    annotations: {
      summary: summary,
      // One line: Alertmanager integrations show it as a paragraph.
      description: std.join(' ', std.split(promql.trim(description), '\n')),
    },
  },

  // A link from a description to the current value of a related series.
  local lastTokenError = |||
    {{ with printf "oauth_token_refresh_last_error{provider=%q,instance=%q,job=%q} == 1" $labels.provider $labels.instance $labels.job | query }}{{ (. | first).Labels.error }}{{ else }}unknown{{ end }}
  |||,
  local lastProbeError = |||
    {{ with printf "oauth_probe_last_error{provider=%q,probe=%q,instance=%q,job=%q} == 1" $labels.provider $labels.probe $labels.instance $labels.job | query }}{{ (. | first).Labels.error }}{{ else }}unknown{{ end }}
  |||,
  local lastProbeStatus = |||
    {{ with printf "oauth_probe_http_status_code{provider=%q,probe=%q,instance=%q,job=%q}" $labels.provider $labels.probe $labels.instance $labels.job | query }}{{ . | first | value }}{{ else }}unknown{{ end }}
  |||,
  local q(template) = promql.trim(template),
  local secret = sel('oauth_client_secret_expiration_timestamp_seconds'),
  local cert = sel('oauth_client_certificate_expiration_timestamp_seconds'),

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'token-health-exporter',
        rules: [
          alert(
            'TokenHealthExporterDown', 'exporter',
            '%s == 0' % sel('up'),
            cfg.exporterDownFor,
            'The token health exporter cannot be scraped.',
            |||
              Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }})
              for %s. While it is down no other TokenHealth alert can fire for
              the credentials it monitors.
            ||| % minutes(cfg.exporterDownFor),
          ),
          alert(
            'TokenHealthExporterAbsent', 'exporter',
            // up == 0 is TokenHealthExporterDown's case; this one is a target
            // gone from service discovery, or a job scraping something else.
            |||
              absent(%s)
              unless on ()
              (%s == 0)
            ||| % [sel('oauth_exporter_build_info'), sel('up')],
            cfg.exporterAbsentFor,
            'No token health exporter is being scraped.',
            |||
              No target matching {%s} has served oauth_exporter_build_info for
              %s ({{ with $labels.job }}job {{ . }}{{ else }}no job label{{ end }}): the target is
              missing from service discovery, or the job scrapes something that is
              not the exporter. Token health is not monitored.
            ||| % [cfg.tokenHealthSelector, minutes(cfg.exporterAbsentFor)],
          ),
          alert(
            'TokenHealthConfigReloadFailed', 'exporter',
            '%s == 0' % sel('oauth_exporter_config_last_reload_successful'),
            cfg.configReloadFailedFor,
            'The token health exporter failed to reload its configuration.',
            |||
              The last configuration reload of the exporter at {{ $labels.instance }}
              failed. It keeps monitoring with the previous configuration, and the
              next restart will fail on the same file.
            |||,
          ),
          alert(
            'TokenHealthRenewalStalled', 'exporter',
            '%s > 0' % ind(promql.lazyIncrease(sel('oauth_exporter_renewal_stalls_total'), cfg.renewalStallsWindow), 0),
            '1m',
            "The exporter's watchdog found a stalled token renewal.",
            |||
              The exporter at {{ $labels.instance }} found {{ $value | humanize }} token
              renewal(s) planned in the past within %s and planned them again.
              Tokens were at risk of running out unnoticed: report it with the logs.
            ||| % minutes(cfg.renewalStallsWindow),
          ),
          alert(
            'TokenHealthRenewalOverdue', 'exporter',
            // The schedule is in the past and nothing is being sent: the
            // renewal stalled and the watchdog did not repair it.
            |||
              (time() - %s > %d)
              unless %s
              (increase(%s[15m]) > 0)
            ||| % [sel('oauth_token_next_renewal_timestamp_seconds'), cfg.renewalOverdueSeconds, on, sel('oauth_token_refresh_attempts_total')],
            cfg.renewalOverdueFor,
            'A scheduled token renewal did not happen.',
            |||
              The token renewal of provider {{ $labels.provider }} is
              {{ $value | humanizeDuration }} overdue and the exporter at
              {{ $labels.instance }} has sent no token request for 15 minutes.
            |||,
          ),
        ],
      },
      {
        name: 'token-health-tokens',
        rules: [
          alert(
            'TokenHealthNoValidToken', 'token',
            // Pending credentials (first token request not completed yet)
            // are TokenHealthFirstTokenOverdue's, after a longer grace.
            cond.noValidToken,
            cfg.noValidTokenFor,
            'The exporter holds no valid token for a provider.',
            |||
              The exporter at {{ $labels.instance }} has held no valid token for provider
              {{ $labels.provider }} for %s (last token error: %s). Its probes are
              skipped, and other clients of these credentials are probably failing too.
            ||| % [minutes(cfg.noValidTokenFor), q(lastTokenError)],
          ),
          alert(
            'TokenHealthFirstTokenOverdue', 'token',
            cond.firstTokenPending,
            cfg.firstTokenGracePeriod,
            'A credential has waited too long for its first token.',
            |||
              Provider {{ $labels.provider }} at {{ $labels.instance }} has not completed its
              first token request in %s. The token host's rate limit should have
              served it by now: the exporter's queue for that host is stuck or far too long.
            ||| % minutes(cfg.firstTokenGracePeriod),
          ),
          alert(
            'TokenHealthCredentialsRejected', 'token_endpoint',
            cond.credentialsRejected,
            cfg.tokenRequestRejectedFor,
            'The token endpoint rejects the client credentials.',
            |||
              The token endpoint of provider {{ $labels.provider }} has rejected every token
              request for %s with {{ $labels.error }}. This does not heal by itself: fix
              the client ID or secret before the current token expires.
            ||| % minutes(cfg.tokenRequestRejectedFor),
          ),
          alert(
            'TokenHealthScopeRejected', 'token_endpoint',
            cond.scopeRejected,
            cfg.tokenRequestRejectedFor,
            'The token endpoint refuses the requested scope.',
            |||
              The token endpoint of provider {{ $labels.provider }} has answered every token
              request for %s with {{ $labels.error }}: the configured scope is not
              allowed for this client. No new token can be had until it is fixed.
            ||| % minutes(cfg.tokenRequestRejectedFor),
          ),
          alert(
            'TokenHealthRenewalFailingExpiresSoon', 'token_endpoint',
            cond.expiresSoon,
            cfg.renewalFailingExpiresSoonFor,
            'Token renewal is failing and the current token is about to expire.',
            |||
              Token renewal for provider {{ $labels.provider }} keeps failing (last error:
              %s) and the current token {{ if gt $value 0.0 }}expires in
              {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}. Then the exporter,
              and any client using these credentials, is locked out.
            ||| % q(lastTokenError),
          ),
          alert(
            'TokenHealthRenewalFailing', 'token_endpoint',
            // Classes with an alert of their own are left out, and so is a
            // short runway, which is TokenHealthRenewalFailingExpiresSoon's.
            |||
              %s
              unless %s
              (%s == 1)
              unless %s
              (%s)
            ||| % [
              cond.renewalFailing,
              on,
              sel('oauth_token_refresh_last_error', [re(credentialClasses + ['invalid_scope', 'rate_limited'])]),
              on,
              cond.shortRunway,
            ],
            cfg.renewalFailingFor,
            'Token renewal is failing.',
            |||
              {{ $value }} token requests in a row for provider {{ $labels.provider }} have
              failed, the last with %s, for %s. The current token works until it expires.
            ||| % [q(lastTokenError), minutes(cfg.renewalFailingFor)],
          ),
          alert(
            'TokenHealthTokenEndpointRateLimited', 'token_endpoint',
            |||
              %s == 1
              unless %s
              (%s)
            ||| % [sel('oauth_token_refresh_last_error', ['error="rate_limited"']), on, cond.shortRunway],
            cfg.rateLimitedFor,
            'The token endpoint is rate-limiting the exporter.',
            |||
              The token endpoint of provider {{ $labels.provider }} has answered every token
              request for %s with {{ $labels.error }} (HTTP 429). Other clients sharing
              the credentials or the egress IP are using up the budget.
            ||| % minutes(cfg.rateLimitedFor),
          ),
          alert(
            'TokenHealthRenewalFlapping', 'token_endpoint',
            // A credential renews every 40 minutes to 8 hours, so the window
            // is long and a few failures are required. A window that holds
            // a streak of failures is an outage (TokenHealthRenewalFailing's
            // while it lasts), not flapping: its retries would otherwise
            // keep the ratio low for hours after it ended.
            local failures = 'sum without (error) %s' % ind(promql.lazyIncrease(sel('oauth_token_refresh_failures_total'), cfg.renewalFlappingWindow), 0);
            |||
              (
                1 - %(failures)s
                / increase(%(attempts)s[%(window)s])
              ) < %(ratio)g
              and
              %(count)s >= %(min)d
              and
              max_over_time(%(consecutive)s[%(window)s]) < %(streak)d
            ||| % {
              failures: ind(failures, 2),
              count: failures,
              attempts: sel('oauth_token_refresh_attempts_total'),
              window: cfg.renewalFlappingWindow,
              ratio: cfg.renewalFlappingSuccessRatio,
              min: cfg.renewalFlappingMinFailures,
              consecutive: sel('oauth_token_refresh_consecutive_failures'),
              streak: cfg.renewalFlappingMaxStreak,
            },
            cfg.renewalFlappingFor,
            'Token renewals fail intermittently.',
            |||
              Only {{ $value | humanizePercentage }} of the token requests for provider
              {{ $labels.provider }} succeeded over the last %s (alert below %s). Each
              failure was repaired by a retry, but the token endpoint is unreliable.
            ||| % [cfg.renewalFlappingWindow, pct(cfg.renewalFlappingSuccessRatio)],
          ),
          alert(
            'TokenHealthScopeNotGranted', 'token_endpoint',
            '%s == 0' % sel('oauth_token_scope_granted'),
            cfg.scopeNotGrantedFor,
            'The token endpoint did not grant a requested scope.',
            |||
              The current token of provider {{ $labels.provider }} was issued without the
              requested scope {{ $labels.scope }}. Calls that need it are refused with
              insufficient_scope; if none does, stop requesting it.
            |||,
          ),
        ],
      },
      {
        name: 'token-health-probes',
        rules: [
          alert(
            'TokenHealthApiRefusesToken', 'probe',
            // The exporter renews once when a token is refused; if the fresh
            // token is refused too it stops renewing for probes until the
            // next scheduled renewal, and the class stays on the probes.
            cond.apiRefusesToken,
            cfg.apiRefusesTokenFor,
            'The API refuses the exporter\'s fresh tokens.',
            |||
              {{ $value }} probe(s) of provider {{ $labels.provider }} have been refused with
              invalid_token, token_expired or token_revoked for %s although the
              token endpoint issued a fresh token. Every client of these credentials is
              locked out of the API.
            ||| % minutes(cfg.apiRefusesTokenFor),
          ),
          alert(
            'TokenHealthProbeFailing', 'probe',
            // Skipped probes (no_token) are TokenHealthNoValidToken's and
            // refused tokens TokenHealthApiRefusesToken's.
            cond.probeFailing,
            cfg.probeFailingFor,
            'An API probe is failing.',
            |||
              Probe {{ $labels.probe }} of provider {{ $labels.provider }} has failed
              {{ $value }} times in a row for %s with a valid token (last error
              %s, HTTP status %s).
            ||| % [minutes(cfg.probeFailingFor), q(lastProbeError), q(lastProbeStatus)],
          ),
          alert(
            'TokenHealthProbeFlapping', 'probe',
            // Probe runs skipped for want of a token are not the API's fault.
            // A window in which the probe went probeFailingFor without a
            // success held an outage (TokenHealthProbeFailing's), not
            // flapping: its failures would keep the ratio low for the rest
            // of the window. So did a window in which the credential had no
            // valid token at some point (TokenHealthNoValidToken's): while a
            // token is refused, the probes still send it and count the API's
            // refusals, which say nothing of the API's reliability.
            local failures = 'sum without (error) %s' % ind(promql.lazyIncrease(sel('oauth_probe_failures_total', ['error!="no_token"']), cfg.probeFlappingWindow), 0);
            |||
              (
                1 - %(failures)s
                / increase(%(attempts)s[%(window)s])
              ) < %(ratio)g
              and
              %(count)s >= %(min)d
              and
              max_over_time((time() - %(lastSuccess)s)[%(window)s:1m]) < %(recent)d
              and %(on)s
              min_over_time(%(valid)s[%(window)s]) == 1
            ||| % {
              on: on,
              valid: sel('oauth_token_valid'),
              failures: ind(failures, 2),
              count: failures,
              attempts: sel('oauth_probe_attempts_total'),
              window: cfg.probeFlappingWindow,
              ratio: cfg.probeFlappingSuccessRatio,
              min: cfg.probeFlappingMinFailures,
              lastSuccess: sel('oauth_probe_last_success_timestamp_seconds'),
              recent: secs(cfg.probeFailingFor),
            },
            cfg.probeFlappingFor,
            'An API probe fails intermittently.',
            |||
              Only {{ $value | humanizePercentage }} of the runs of probe {{ $labels.probe }}
              of provider {{ $labels.provider }} succeeded over the last %s (alert
              below %s): users of this API see the same share of requests fail.
            ||| % [cfg.probeFlappingWindow, pct(cfg.probeFlappingSuccessRatio)],
          ),
          alert(
            'TokenHealthTokenRevoked', 'probe',
            // A revocation the exporter repaired by renewing. Refusal on every
            // try is TokenHealthApiRefusesToken's.
            |||
              sum without (probe, error) %s > 0
              unless %s
              (%s)
            ||| % [
              ind(promql.lazyIncrease(sel('oauth_probe_failures_total', ['error="token_revoked"']), cfg.tokenRevokedWindow), 0),
              on,
              cond.apiRefusesToken,
            ],
            '1m',
            "The provider revoked the exporter's token.",
            |||
              Probes of provider {{ $labels.provider }} were refused with token_revoked
              {{ $value | humanize }} time(s) in the last %s. Another client most likely
              uses the same credentials: at providers with one active token per
              application each new token revokes the previous one.
            ||| % minutes(cfg.tokenRevokedWindow),
          ),
        ],
      },
      {
        name: 'token-health-credentials',
        rules: [
          alert(
            'TokenHealthClientSecretExpiresSoon', 'expiry',
            // Ends where the critical one starts: exactly one of them fires.
            |||
              %(m)s - time() < %(warn)d
              and
              %(m)s - time() >= %(crit)d
            ||| % { m: secret, warn: days(cfg.clientSecretExpiryWarningDays), crit: days(cfg.clientSecretExpiryCriticalDays) },
            cfg.expiryWarningFor,
            'A client secret expires in less than %d days.' % cfg.clientSecretExpiryWarningDays,
            |||
              The client secret of provider {{ $labels.provider }} expires in
              {{ $value | humanizeDuration }}. Create a new secret and roll it out before then.
            |||,
          ),
          alert(
            'TokenHealthClientSecretExpiresVerySoon', 'expiry',
            '%s - time() < %d' % [secret, days(cfg.clientSecretExpiryCriticalDays)],
            cfg.expiryCriticalFor,
            'A client secret expires in less than %d days or has expired.' % cfg.clientSecretExpiryCriticalDays,
            |||
              The client secret of provider {{ $labels.provider }}
              {{ if gt $value 0.0 }}expires in {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}.
              Then the token endpoint answers invalid_client and every client using it is
              locked out when its token runs out.
            |||,
          ),
          alert(
            'TokenHealthClientCertExpiresSoon', 'expiry',
            |||
              %(m)s - time() < %(warn)d
              and
              %(m)s - time() >= %(crit)d
            ||| % { m: cert, warn: days(cfg.clientCertExpiryWarningDays), crit: days(cfg.clientCertExpiryCriticalDays) },
            cfg.expiryWarningFor,
            'A client certificate expires in less than %d days.' % cfg.clientCertExpiryWarningDays,
            |||
              The {{ $labels.use }} certificate of provider {{ $labels.provider }} expires in
              {{ $value | humanizeDuration }}. Issue a new one and roll it out before then.
            |||,
          ),
          alert(
            'TokenHealthClientCertExpiresVerySoon', 'expiry',
            '%s - time() < %d' % [cert, days(cfg.clientCertExpiryCriticalDays)],
            cfg.expiryCriticalFor,
            'A client certificate expires in less than %d days or has expired.' % cfg.clientCertExpiryCriticalDays,
            |||
              The {{ $labels.use }} certificate of provider {{ $labels.provider }}
              {{ if gt $value 0.0 }}expires in {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}.
              Then the token endpoint refuses the client and no new token can be had.
            |||,
          ),
        ],
      },
    ],
  },
}
