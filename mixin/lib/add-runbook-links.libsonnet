// Adds `runbook_url` to every alert in one pass, after the alerts are built,
// so that no alert can be written without one or with a different pattern.
{
  local cfg = $._config,
  prometheusAlerts+:: {
    groups: [
      group {
        rules: [
          rule + (
            if std.objectHas(rule, 'alert') then {
              annotations+: {
                runbook_url: cfg.runbookURLPattern % std.asciiLower(rule.alert),
              },
            } else {}
          )
          for rule in group.rules
        ],
      }
      for group in super.groups
    ],
  },
}
