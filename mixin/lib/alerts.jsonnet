// jsonnet mixin/lib/alerts.jsonnet > token-health.rules.yml
//
// JSON is YAML, so Prometheus and promtool read the output as a rule file.
// std.manifestYamlDoc would give prettier YAML, but it escapes strings in
// jsonnet and takes half a minute for these rules; mixin/render.py writes the
// readable YAML that the repository ships.
(import '../mixin.libsonnet').prometheusAlerts
