// Every dashboard of the mixin, under grafanaDashboards (file name -> JSON).
(import 'token-health.libsonnet')
