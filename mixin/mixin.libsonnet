// The token-health mixin: Prometheus alerts and a Grafana dashboard for
// token-health-exporter. Import it, override `_config+::` and render:
//
//   local mixin = (import 'mixin.libsonnet') + { _config+:: { ... } };
//   mixin.prometheusAlerts     // a rule file: { groups: [...] }
//   mixin.grafanaDashboards    // { 'token-health.json': {...} }
//
// config.libsonnet documents every key.
(import 'config.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
+ (import 'lib/add-runbook-links.libsonnet')
