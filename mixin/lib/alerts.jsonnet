// jsonnet -S mixin/lib/alerts.jsonnet > token-health.rules.yml
std.manifestYamlDoc((import '../mixin.libsonnet').prometheusAlerts, indent_array_in_object=true, quote_keys=false)
