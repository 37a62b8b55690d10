// The "Token health" dashboard. The first row answers "is anything broken,
// and what": counts, then one row per credential sorted by urgency (no valid
// token first, then whatever runs out soonest).
local p = import 'panels.libsonnet';
local promql = import '../lib/promql.libsonnet';

{
  local cfg = $._config,
  local multi = cfg.showMultiCluster,
  local clusterMatch = if multi then ['%s=~"$cluster"' % cfg.clusterLabel] else [],
  local exporterMatch = clusterMatch + ['job=~"$job"', 'instance=~"$instance"'],
  local providerMatch = exporterMatch + ['provider=~"$provider"'],
  local probeMatch = providerMatch + ['probe=~"$probe"'],
  // Series selectors at three levels: the exporter, a credential, a probe.
  local E(metric, extra=[]) = promql.sel(cfg.tokenHealthSelector, metric, exporterMatch + extra),
  local P(metric, extra=[]) = promql.sel(cfg.tokenHealthSelector, metric, providerMatch + extra),
  local R(metric, extra=[]) = promql.sel(cfg.tokenHealthSelector, metric, probeMatch + extra),
  local lazy = promql.lazyIncrease,
  local ind = promql.indent,
  local join(labels) = std.join(', ', labels),
  local byProvider = (if multi then [cfg.clusterLabel] else []) + ['provider'],
  local byProbe = byProvider + ['probe'],
  local on = 'on (%s)' % join([cfg.clusterLabel] + cfg.providerLabels),
  local days(n) = n * 86400,
  local legendProvider = if multi then '{{%s}} {{provider}}' % cfg.clusterLabel else '{{provider}}',
  local legendProbe = legendProvider + ' {{probe}}',
  // A value no deadline reaches: "nothing known runs out" in the status table.
  local never = 3153600000,

  // A success ratio over `window` with lazily created failure series: no
  // failure series at all means a ratio of 1, not "no data".
  local successRatio(failures, attempts, by, window, skipped=null) =
    local none = 'sum by (%s) (increase(%s[%s])) * 0' % [join(by), attempts, window];
    local total = 'sum by (%s) (increase(%s[%s]))' % [join(by), attempts, window];
    local counted(sel) = |||
      (
        sum by (%s) %s
        or
        %s
      )
    ||| % [join(by), ind(lazy(sel, window), 2), none];
    |||
      1 - %s
      / %s
    ||| % [
      ind(counted(failures), 0),
      if skipped == null then total else '(\n  %s\n  + %s\n)' % [total, ind(counted(skipped), 2)],
    ],

  // Budgets (token requests per minute) per token host, from config.
  local budgets =
    [
      'max by (token_host) (%s) * %s' % [P('oauth_provider_info', ['preset="%s"' % preset]), cfg.tokenRateLimitsByPreset[preset]]
      for preset in std.objectFields(cfg.tokenRateLimitsByPreset)
    ] + [
      'max by (token_host) (%s) * %s' % [P('oauth_provider_info', ['token_host="%s"' % host]), cfg.tokenRateLimitsByHost[host]]
      for host in std.objectFields(cfg.tokenRateLimitsByHost)
    ],
  local budget = std.join('\nor\n', budgets),
  local tokenRequestsPerMinute = |||
    sum by (token_host) (
      rate(%s[$__rate_interval]) * 60
      * %s group_left (token_host)
      %s
    )
  ||| % [P('oauth_token_refresh_attempts_total'), on, P('oauth_provider_info')],

  local statusTable =
    p.table(
      'Credential status',
      |||
        One row per credential, most urgent first. "Breaks in" is the time until the
        first thing runs out: 0 without a valid token; the token's time left while
        renewals fail; the client secret or certificate expiry. Token: valid, pending
        (first token request not completed yet) or none.
      |||,
      's',
      [
        p.target(|||
          bottomk by (%(by)s) (1,
            label_replace(
              ((%(valid)s == 0) + 0) unless %(on)s (%(pending)s == 1),
              "runs_out", "no valid token", "", "")
            or
            label_replace(
              (%(expiry)s - time()) and %(on)s (%(failures)s > 0),
              "runs_out", "token (renewal failing)", "", "")
            or
            label_replace(%(secret)s - time(), "runs_out", "client secret", "", "")
            or
            label_replace(%(cert)s - time(), "runs_out", "client certificate ($1)", "use", "(.+)")
            or
            label_replace(%(valid)s * 0 + %(never)d, "runs_out", "nothing known", "", "")
          )
        ||| % {
          by: join((if multi then [cfg.clusterLabel] else []) + cfg.providerLabels),
          valid: P('oauth_token_valid'),
          pending: P('oauth_token_pending'),
          on: on,
          expiry: P('oauth_token_expiration_timestamp_seconds'),
          failures: P('oauth_token_refresh_consecutive_failures'),
          secret: P('oauth_client_secret_expiration_timestamp_seconds'),
          cert: P('oauth_client_certificate_expiration_timestamp_seconds'),
          never: never,
        }, instant=true, format='table'),
        p.target('%s + 2 * %s' % [P('oauth_token_valid'), P('oauth_token_pending')], instant=true, format='table'),
        p.target(P('oauth_token_refresh_consecutive_failures'), instant=true, format='table'),
        p.target('%s == 1' % P('oauth_token_refresh_last_error'), instant=true, format='table'),
        p.target(|||
          count without (probe) (%(c)s > 0)
          or
          count without (probe) (%(c)s) * 0
        ||| % { c: R('oauth_probe_consecutive_failures') }, instant=true, format='table'),
      ],
      [0, 5, 24, 10],
    ) {
      transformations: [
        { id: 'merge', options: {} },
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true, job: true, 'Value #D': true },
            renameByName: {
              'Value #A': 'Breaks in',
              runs_out: 'What runs out first',
              'Value #B': 'Token',
              'Value #C': 'Token failures in a row',
              'error': 'Last token error',
              'Value #E': 'Failing probes',
            },
            indexByName: {
              provider: 0,
              instance: 1,
              'Value #A': 2,
              runs_out: 3,
              'Value #B': 4,
              'Value #C': 5,
              'error': 6,
              'Value #E': 7,
            },
          },
        },
      ],
      options+: { sortBy: [{ displayName: 'Breaks in', desc: false }] },
      fieldConfig+: {
        defaults+: { custom: { align: 'auto', cellOptions: { type: 'auto' } } },
        overrides: [
          p.override('Breaks in', {
            unit: 's',
            mappings: [
              p.valueMapping(0, 'now', 'red'),
              p.rangeMapping(never / 2, null, 'nothing known', 'green'),
            ],
            thresholds: p.thresholds([
              [null, 'red'],
              [days(cfg.clientSecretExpiryCriticalDays), 'orange'],
              [days(cfg.clientSecretExpiryWarningDays), 'green'],
            ]),
            'custom.cellOptions': { type: 'color-background' },
          }),
          p.override('Token', {
            unit: 'none',
            mappings: [
              p.valueMapping(0, 'none', 'red'),
              p.valueMapping(1, 'valid', 'green'),
              p.valueMapping(2, 'pending', 'blue'),
            ],
            'custom.cellOptions': { type: 'color-text' },
          }),
          p.override('Token failures in a row', {
            unit: 'none',
            thresholds: p.thresholds([[null, 'green'], [1, 'red']]),
            'custom.cellOptions': { type: 'color-text' },
          }),
          p.override('Failing probes', {
            unit: 'none',
            thresholds: p.thresholds([[null, 'green'], [1, 'red']]),
            'custom.cellOptions': { type: 'color-text' },
          }),
        ],
      },
    },

  local panels = [
    p.row('Is anything broken, and what?', 0),
    p.stat(
      'Providers without a valid token',
      'Credentials whose first token request has completed but that hold no valid token: their probes are skipped and TokenHealthNoValidToken pages.',
      'none',
      'count(%s == 0 unless %s %s == 1) or vector(0)' % [P('oauth_token_valid'), on, P('oauth_token_pending')],
      [0, 1, 4, 4],
    ),
    p.stat(
      'Pending first token',
      'Credentials still waiting for their first token request (start-up, new credential): normal for a few minutes behind a rate-limited token host.',
      'none',
      'count(%s == 1) or vector(0)' % P('oauth_token_pending'),
      [4, 1, 4, 4],
      [[null, 'green'], [1, 'blue']],
    ),
    p.stat(
      'Failing token renewals',
      'Credentials whose last token request failed (oauth_token_refresh_consecutive_failures > 0).',
      'none',
      'count(%s > 0) or vector(0)' % P('oauth_token_refresh_consecutive_failures'),
      [8, 1, 4, 4],
      [[null, 'green'], [1, 'orange']],
    ),
    p.stat(
      'Failing probes',
      'Probes whose last run failed, for any reason including a missing token.',
      'none',
      'count(%s > 0) or vector(0)' % R('oauth_probe_consecutive_failures'),
      [12, 1, 4, 4],
      [[null, 'green'], [1, 'red']],
    ),
    p.stat(
      'Secrets and certificates expiring within %d days' % cfg.clientSecretExpiryWarningDays,
      'Client secrets (client_secret_expires_at) and client certificates that expire within the warning period of the expiry alerts.',
      'none',
      |||
        count(
          %s - time() < %d
          or
          %s - time() < %d
        ) or vector(0)
      ||| % [
        P('oauth_client_secret_expiration_timestamp_seconds'),
        days(cfg.clientSecretExpiryWarningDays),
        P('oauth_client_certificate_expiration_timestamp_seconds'),
        days(cfg.clientCertExpiryWarningDays),
      ],
      [16, 1, 4, 4],
      [[null, 'green'], [1, 'orange']],
    ),
    p.stat(
      'Exporters down',
      'Exporter targets Prometheus fails to scrape. While one is down nothing about its credentials can alert.',
      'none',
      'count(%s == 0) or vector(0)' % E('up'),
      [20, 1, 4, 4],
    ),
    statusTable,

    p.row('Tokens', 15),
    p.timeseries(
      'Token time left',
      'Seconds left on each held token: a sawtooth that jumps up at every renewal. A line that keeps falling means renewals fail.',
      's',
      [p.target('%s - time()' % P('oauth_token_expiration_timestamp_seconds'), legendProvider)],
      [0, 16, 12, 8],
    ),
    p.bargauge(
      'Next renewal in',
      'When each credential renews next. Never far in the past: the exporter re-plans a stalled renewal (oauth_exporter_renewal_stalls_total).',
      's',
      [p.target('%s - time()' % P('oauth_token_next_renewal_timestamp_seconds'), legendProvider, instant=true)],
      [12, 16, 12, 8],
      [[null, 'red'], [0, 'green']],
    ),
    p.timeseries(
      'Token renewal success ratio (%s)' % cfg.renewalFlappingWindow,
      'Share of token requests that succeeded over the last %s, the window TokenHealthRenewalFlapping uses (it alerts below %g with at least %d failures).' % [cfg.renewalFlappingWindow, cfg.renewalFlappingSuccessRatio, cfg.renewalFlappingMinFailures],
      'percentunit',
      [p.target(successRatio(P('oauth_token_refresh_failures_total'), P('oauth_token_refresh_attempts_total'), byProvider, cfg.renewalFlappingWindow), legendProvider)],
      [0, 24, 12, 8],
    ) { fieldConfig+: { defaults+: { min: 0, max: 1 } } },
    p.timeseries(
      'Token request failures by class',
      'Failed token requests per $__rate_interval by error class. The first failure of a class counts too, although its series only appears then.',
      'short',
      [p.target('sum by (%s, error) %s > 0' % [join(byProvider), ind(lazy(P('oauth_token_refresh_failures_total'), '$__rate_interval'), 0)], legendProvider + ': {{error}}')],
      [12, 24, 12, 8],
    ),
    p.timeseries(
      'Token requests per minute by token host',
      'Token requests the exporter sends to each token host, against the host budget configured in the mixin (tokenRateLimitsByPreset, tokenRateLimitsByHost). Other clients behind the same IP share the budget.',
      'short',
      [p.target(tokenRequestsPerMinute, '{{token_host}}')]
      + (if budget == '' then [] else [p.target(budget, '{{token_host}} budget')]),
      [0, 32, 12, 8],
    ),
  ] + (if budget == '' then [] else [
    p.bargauge(
      'Rate-limit headroom by token host',
      'Share of each token host budget the exporter leaves unused (1 - requests per minute / budget). Only hosts with a budget in the mixin config appear.',
      'percentunit',
      [p.target('1 - %s\n/ on (token_host)\n(\n  %s\n)' % [ind(tokenRequestsPerMinute, 0), ind(budget, 2)], '{{token_host}}', instant=true)],
      [12, 32, 12, 8],
      [[null, 'red'], [0.2, 'orange'], [0.5, 'green']],
    ) { fieldConfig+: { defaults+: { max: 1 } } },
  ]) + [
    p.timeseries(
      'Token request latency',
      'Mean token request latency per $__rate_interval (the exporter exports _sum and _count; start it with bucketed histograms and set latencyBuckets for quantiles).',
      's',
      [p.target(|||
        sum by (%(by)s) (rate(%(sum)s[$__rate_interval]))
        / sum by (%(by)s) (rate(%(count)s[$__rate_interval]))
      ||| % { by: join(byProvider), sum: P('oauth_token_refresh_duration_seconds_sum'), count: P('oauth_token_refresh_duration_seconds_count') }, legendProvider + ' mean')]
      + (if cfg.latencyBuckets then [p.target('histogram_quantile(0.99, sum by (%s, le) (rate(%s[$__rate_interval])))' % [join(byProvider), P('oauth_token_refresh_duration_seconds_bucket')], legendProvider + ' p99')] else []),
      [0, 40, 12, 8],
    ),
    p.timeseries(
      'Time since last successful token request',
      'Age of the last successful token request per credential. It grows past the renewal interval only while renewals fail.',
      's',
      [p.target('time() - %s' % P('oauth_token_last_refresh_success_timestamp_seconds'), legendProvider)],
      [12, 40, 12, 8],
    ),

    p.row('Probes', 48),
    p.stateTimeline(
      'Probe status',
      'Each probe: ok when its last run met its expectation, failing otherwise (including runs skipped for want of a token).',
      'none',
      [p.target(R('oauth_probe_success'), legendProbe)],
      [0, 49, 24, 8],
      [p.valueMapping(1, 'ok', 'green'), p.valueMapping(0, 'failing', 'red')],
    ),
    p.timeseries(
      'Probe success ratio (%s)' % cfg.probeFlappingWindow,
      'Share of probe runs over the last %s that met their expectation; runs skipped for want of a token count as failures here. TokenHealthProbeFlapping uses the same window without the skipped runs and alerts below %g.' % [cfg.probeFlappingWindow, cfg.probeFlappingSuccessRatio],
      'percentunit',
      [p.target(successRatio(
        R('oauth_probe_failures_total'),
        R('oauth_probe_attempts_total'),
        byProbe,
        cfg.probeFlappingWindow,
        skipped=R('oauth_probe_failures_total', ['error="no_token"']),
      ), legendProbe)],
      [0, 57, 12, 8],
    ) { fieldConfig+: { defaults+: { min: 0, max: 1 } } },
    p.timeseries(
      'Probe failures by class',
      'Failed probe runs per $__rate_interval by error class; no_token means the run was skipped for want of a valid token.',
      'short',
      [p.target('sum by (%s, error) %s > 0' % [join(byProbe), ind(lazy(R('oauth_probe_failures_total'), '$__rate_interval'), 0)], legendProbe + ': {{error}}')],
      [12, 57, 12, 8],
    ),
    p.timeseries(
      'Probe latency',
      'Mean probe latency per $__rate_interval (from _sum and _count; with bucketed histograms and latencyBuckets, also p95).',
      's',
      [p.target(|||
        sum by (%(by)s) (rate(%(sum)s[$__rate_interval]))
        / sum by (%(by)s) (rate(%(count)s[$__rate_interval]))
      ||| % { by: join(byProbe), sum: R('oauth_probe_duration_seconds_sum'), count: R('oauth_probe_duration_seconds_count') }, legendProbe + ' mean')]
      + (if cfg.latencyBuckets then [p.target('histogram_quantile(0.95, sum by (%s, le) (rate(%s[$__rate_interval])))' % [join(byProbe), R('oauth_probe_duration_seconds_bucket')], legendProbe + ' p95')] else []),
      [12, 65, 12, 8],
    ),
    p.table(
      'Probe details',
      'Last HTTP status (0: no response), failed runs in a row and the error class of the last failure, per probe.',
      'none',
      [
        p.target(R('oauth_probe_http_status_code'), instant=true, format='table'),
        p.target(R('oauth_probe_consecutive_failures'), instant=true, format='table'),
        p.target('%s == 1' % R('oauth_probe_last_error'), instant=true, format='table'),
      ],
      [0, 65, 12, 8],
    ) {
      transformations: [
        { id: 'merge', options: {} },
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true, job: true, 'Value #C': true },
            renameByName: { 'Value #A': 'HTTP status', 'Value #B': 'Failures in a row', 'error': 'Last error' },
          },
        },
      ],
      options+: { sortBy: [{ displayName: 'Failures in a row', desc: true }] },
    },

    p.row('Credentials', 73),
    p.bargauge(
      'Client secrets by days left',
      'Days until each client secret expires (client_secret_expires_at in the config). Warning below %d days, critical below %d.' % [cfg.clientSecretExpiryWarningDays, cfg.clientSecretExpiryCriticalDays],
      'd',
      [p.target('(%s - time()) / 86400' % P('oauth_client_secret_expiration_timestamp_seconds'), legendProvider, instant=true)],
      [0, 74, 8, 8],
      [[null, 'red'], [cfg.clientSecretExpiryCriticalDays, 'orange'], [cfg.clientSecretExpiryWarningDays, 'green']],
    ),
    p.bargauge(
      'Client certificates by days left',
      'Days until each client certificate (use="tls") or assertion signing certificate (use="signing") expires. Warning below %d days, critical below %d.' % [cfg.clientCertExpiryWarningDays, cfg.clientCertExpiryCriticalDays],
      'd',
      [p.target('(%s - time()) / 86400' % P('oauth_client_certificate_expiration_timestamp_seconds'), legendProvider + ' {{use}}', instant=true)],
      [8, 74, 8, 8],
      [[null, 'red'], [cfg.clientCertExpiryCriticalDays, 'orange'], [cfg.clientCertExpiryWarningDays, 'green']],
    ),
    p.table(
      'Granted scopes',
      'Every requested scope of the current token: 1 granted, 0 not granted by the server.',
      'none',
      [p.target(P('oauth_token_scope_granted'), instant=true, format='table')],
      [16, 74, 8, 8],
    ) { transformations: [{ id: 'organize', options: { excludeByName: { Time: true, __name__: true, job: true }, renameByName: { Value: 'Granted' } } }] },
    p.table(
      'Providers',
      'Every configured credential with its preset, token host and client authentication method.',
      'none',
      [p.target(P('oauth_provider_info'), instant=true, format='table')],
      [0, 82, 24, 6],
    ) { transformations: [{ id: 'organize', options: { excludeByName: { Time: true, __name__: true, Value: true } } }] },

    p.row('Exporter', 88),
    p.stat(
      'Last config reload',
      'Whether the last configuration load or reload of each exporter succeeded. A failed reload keeps the previous configuration.',
      'none',
      'min(%s)' % E('oauth_exporter_config_last_reload_successful'),
      [0, 89, 6, 4],
      [[null, 'red'], [1, 'green']],
    ) { fieldConfig+: { defaults+: { mappings: [p.valueMapping(1, 'ok', 'green'), p.valueMapping(0, 'failed', 'red')] } } },
    p.stat(
      'Renewal stalls repaired',
      "Token renewals found planned in the past and re-planned by the exporter's watchdog in the selected time range. Anything above 0 is an exporter bug to report.",
      'none',
      'sum(%s) or vector(0)' % ind(lazy(E('oauth_exporter_renewal_stalls_total'), '$__range'), 0),
      [6, 89, 6, 4],
      [[null, 'green'], [1, 'orange']],
    ),
    p.table(
      'Exporter versions',
      'Version, revision and Python version of every exporter instance.',
      'none',
      [p.target(E('oauth_exporter_build_info'), instant=true, format='table')],
      [12, 89, 12, 4],
    ) { transformations: [{ id: 'organize', options: { excludeByName: { Time: true, __name__: true, Value: true } } }] },
  ],

  local variable(name, label, query) = {
    name: name,
    label: label,
    type: 'query',
    datasource: p.datasource,
    definition: query,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    refresh: 2,
    regex: '',
    sort: 1,
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    hide: 0,
  },
  local sel(metric, extra) = promql.sel(cfg.tokenHealthSelector, metric, extra),

  local dashboard = {
    uid: cfg.dashboardUid,
    title: cfg.dashboardTitle,
    description: 'OAuth 2.0 client-credentials token and API probe health, from token-health-exporter.',
    tags: cfg.dashboardTags,
    schemaVersion: 41,
    version: 1,
    editable: false,
    graphTooltip: 1,
    timezone: cfg.dashboardTimezone,
    refresh: cfg.dashboardRefresh,
    time: { from: cfg.dashboardTimeFrom, to: 'now' },
    timepicker: {},
    fiscalYearStartMonth: 0,
    liveNow: false,
    weekStart: '',
    links: [{
      title: 'Runbooks',
      type: 'link',
      icon: 'doc',
      targetBlank: true,
      tooltip: 'What each TokenHealth alert means and how to fix it',
      url: std.split(cfg.runbookURLPattern, '#')[0],
      asDropdown: false,
      includeVars: false,
      keepTime: false,
      tags: [],
    }],
    annotations: {
      list: [{
        builtIn: 1,
        datasource: { type: 'grafana', uid: '-- Grafana --' },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      }],
    },
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          regex: '',
          current: { selected: true, text: 'default', value: 'default' },
          options: [],
          hide: 0,
          refresh: 1,
          multi: false,
          includeAll: false,
        },
      ] + (
        if multi then [variable('cluster', 'Cluster', 'label_values(%s, %s)' % [sel('oauth_exporter_build_info', []), cfg.clusterLabel])]
        else []
      ) + [
        variable('job', 'Job', 'label_values(%s, job)' % sel('oauth_exporter_build_info', clusterMatch)),
        variable('instance', 'Instance', 'label_values(%s, instance)' % sel('oauth_exporter_build_info', clusterMatch + ['job=~"$job"'])),
        variable('provider', 'Provider', 'label_values(%s, provider)' % sel('oauth_provider_info', exporterMatch)),
        variable('probe', 'Probe', 'label_values(%s, probe)' % sel('oauth_probe_success', providerMatch)),
      ],
    },
    panels: p.withIds(panels),
  },

  grafanaDashboards+:: {
    'token-health.json': dashboard,
  },
}
