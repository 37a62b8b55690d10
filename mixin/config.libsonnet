// Every knob of the token-health mixin. Override it from your own jsonnet:
//
//   (import 'mixin.libsonnet') + { _config+:: { tokenHealthSelector: 'job="oauth"' } }
//
// and render with `python mixin/render.py` (or the lib/*.jsonnet entry points).
// Summaries and descriptions are built from these values, so they stay true
// when you change them.
{
  _config+:: {
    // Spliced into every series selector of every rule and panel, including
    // `up` and the absent() check. Change it when your scrape job is not
    // called token-health-exporter, or to narrow to a namespace, e.g.
    // 'job="oauth", namespace="auth"'. Keep at least one equality matcher:
    // absent() copies equality matchers into the labels of its alert.
    tokenHealthSelector: 'job="token-health-exporter"',

    // The label that tells clusters apart when one Prometheus (or Thanos)
    // sees several. It joins the labels that identify a credential, so the
    // root-cause hierarchy never matches across clusters. A label that does
    // not exist is harmless.
    clusterLabel: 'cluster',
    // With the cluster label, the labels that identify one credential across
    // the exporter's metrics: the `on (...)` of the hierarchy clauses and the
    // `equal` of the Alertmanager inhibit rules (examples/alertmanager).
    providerLabels: ['job', 'instance', 'provider'],

    // `%s` becomes the lower-cased alert name: the anchor of the alert's
    // section in docs/runbooks.md. Point it at your fork or wiki.
    runbookURLPattern: 'https://github.com/token-health-exporter/token-health-exporter/blob/main/docs/runbooks.md#%s',

    // Encode the root-cause hierarchy (no valid token > token endpoint
    // failing > probe failing > secret or certificate expiring) in the rules
    // with `unless on (...)` clauses, so that one incident raises one
    // critical alert even without Alertmanager. Set false only if your
    // Alertmanager carries the inhibit rules of examples/alertmanager.
    hierarchyInRules: true,

    // ---------------------------------------------------------------- tokens

    // No valid token although the first token request has completed.
    noValidTokenFor: '5m',
    // Start-up grace: how long a credential may wait for its first token
    // request (oauth_token_pending == 1) before that pages. The exporter
    // paces first requests by the token host's rate limit, so this must
    // cover (credentials on the busiest token host) / (its requests per
    // minute), with margin: 50 credentials behind SimpleDocs' 10 per minute
    // need 5 minutes; 30 minutes covers 300.
    firstTokenGracePeriod: '30m',
    // Token requests refused for good (credentials, scope): they do not heal.
    tokenRequestRejectedFor: '5m',
    // Renewal failing with a class that may heal (5xx, timeouts, ...) while
    // the token still has more than renewalRunwaySeconds left: a warning.
    renewalFailingFor: '15m',
    // Below this much token time left a failing renewal pages. A 1 h token
    // renewed at 67 % of its life has 20 minutes left at its renewal.
    renewalRunwaySeconds: 1800,
    renewalFailingExpiresSoonFor: '5m',
    // The token endpoint answering 429 on every try.
    rateLimitedFor: '15m',
    // Intermittent renewal failures: success ratio over a long window, since
    // a credential renews only every 40 minutes to 8 hours.
    renewalFlappingWindow: '6h',
    renewalFlappingSuccessRatio: 0.9,
    renewalFlappingMinFailures: 3,
    // A window in which this many token requests failed in a row (as the
    // scrapes saw it) held an outage, not flapping.
    renewalFlappingMaxStreak: 3,
    renewalFlappingFor: '15m',
    // A requested scope was not granted.
    scopeNotGrantedFor: '10m',
    // The next renewal is this far in the past and no token request was sent.
    renewalOverdueSeconds: 600,
    renewalOverdueFor: '10m',

    // ---------------------------------------------------------------- probes

    // A probe failing on every run (not for want of a token).
    probeFailingFor: '10m',
    // The API refuses the exporter's fresh tokens (invalid_token,
    // token_expired, token_revoked while the token is valid).
    apiRefusesTokenFor: '10m',
    // Intermittent probe failures: a 30 % failing probe stays below every
    // "failing" rule, so the success ratio over a window alerts instead.
    // Tuned for probe intervals up to about 2 minutes.
    probeFlappingWindow: '1h',
    probeFlappingSuccessRatio: 0.9,
    probeFlappingMinFailures: 3,
    probeFlappingFor: '15m',
    // Any token_revoked answer within this window (another client shares
    // the credentials at a one-active-token provider).
    tokenRevokedWindow: '1h',

    // ------------------------------------------------------------- expiry

    clientSecretExpiryWarningDays: 30,
    clientSecretExpiryCriticalDays: 3,
    clientCertExpiryWarningDays: 30,
    clientCertExpiryCriticalDays: 3,
    expiryWarningFor: '1h',
    expiryCriticalFor: '10m',

    // -------------------------------------------------------------- exporter

    exporterDownFor: '10m',
    exporterAbsentFor: '15m',
    configReloadFailedFor: '5m',
    renewalStallsWindow: '1h',

    // Severity per alert. The policy (docs/alerts.md): critical, the
    // integration breaks within hours (a page); warning, act this week;
    // info, a ticket. The exporter being down breaks no integration, it
    // blinds you: raise it to critical if nothing else watches your targets.
    alertSeverities: {
      TokenHealthExporterDown: 'warning',
      TokenHealthExporterAbsent: 'warning',
      TokenHealthConfigReloadFailed: 'warning',
      TokenHealthRenewalStalled: 'warning',
      TokenHealthRenewalOverdue: 'warning',
      TokenHealthNoValidToken: 'critical',
      TokenHealthFirstTokenOverdue: 'critical',
      TokenHealthCredentialsRejected: 'critical',
      TokenHealthScopeRejected: 'critical',
      TokenHealthRenewalFailingExpiresSoon: 'critical',
      TokenHealthRenewalFailing: 'warning',
      TokenHealthTokenEndpointRateLimited: 'warning',
      TokenHealthRenewalFlapping: 'warning',
      TokenHealthScopeNotGranted: 'info',
      TokenHealthApiRefusesToken: 'critical',
      TokenHealthProbeFailing: 'critical',
      TokenHealthProbeFlapping: 'warning',
      TokenHealthTokenRevoked: 'warning',
      TokenHealthClientSecretExpiresSoon: 'warning',
      TokenHealthClientSecretExpiresVerySoon: 'critical',
      TokenHealthClientCertExpiresSoon: 'warning',
      TokenHealthClientCertExpiresVerySoon: 'critical',
    },

    // ------------------------------------------------------------- dashboard

    dashboardUid: 'token-health',
    dashboardTitle: 'Token health',
    dashboardTags: ['token-health', 'oauth', 'prometheus-exporter'],
    dashboardRefresh: '1m',
    dashboardTimeFrom: 'now-6h',
    dashboardTimezone: '',
    // Adds a cluster variable (from clusterLabel) to the dashboard.
    showMultiCluster: false,
    // The exporter exports latency histograms as _sum/_count unless started
    // with bucketed histograms; set true then to get p95/p99 panels.
    latencyBuckets: false,
    // Token requests per minute that a token host allows, for the rate-limit
    // headroom panel. No metric gives headroom (the budget is shared with
    // every other client behind the same IP), so the panel compares the
    // exporter's own token requests per token host with these budgets.
    // By preset (from the providers' documentation) and by token host.
    tokenRateLimitsByPreset: { simpledocs: 10 },
    tokenRateLimitsByHost: {},
  },
}
