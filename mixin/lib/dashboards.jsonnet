// jsonnet -m out/ mixin/lib/dashboards.jsonnet   (one JSON file per dashboard)
(import '../mixin.libsonnet').grafanaDashboards
