// Plain-object Grafana panels: the few fields this dashboard needs, with
// the conventions every panel must follow (the dashboard's datasource
// variable, a description, a unit). No grafonnet: it cannot be fetched in CI,
// and these objects are small enough to read as they are.
local promql = import '../lib/promql.libsonnet';

{
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  target(expr, legend='', refId='A', instant=false, format='time_series'):: {
    datasource: $.datasource,
    expr: promql.trim(expr),
    legendFormat: legend,
    refId: refId,
    instant: instant,
    range: !instant,
    format: format,
    editorMode: 'code',
  },

  // Targets get refIds A, B, C... in order.
  targets(list):: [
    list[i] { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(list) - 1)
  ],

  thresholds(steps):: {
    mode: 'absolute',
    steps: [{ color: steps[0][1], value: null }] + [
      { color: s[1], value: s[0] }
      for s in steps[1:]
    ],
  },

  base(type, title, description, unit, targets, pos):: {
    type: type,
    title: title,
    description: promql.trim(description),
    datasource: $.datasource,
    gridPos: { x: pos[0], y: pos[1], w: pos[2], h: pos[3] },
    targets: $.targets(targets),
    fieldConfig: { defaults: { unit: unit }, overrides: [] },
    options: {},
  },

  row(title, y):: {
    type: 'row',
    title: title,
    collapsed: false,
    gridPos: { x: 0, y: y, w: 24, h: 1 },
    panels: [],
  },

  stat(title, description, unit, expr, pos, steps=[[null, 'green'], [1, 'red']]):: $.base('stat', title, description, unit, [$.target(expr, instant=true)], pos) {
    fieldConfig+: { defaults+: { thresholds: $.thresholds(steps), color: { mode: 'thresholds' } } },
    options+: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'background',
      graphMode: 'none',
      textMode: 'value',
      justifyMode: 'auto',
      orientation: 'auto',
    },
  },

  timeseries(title, description, unit, targets, pos):: $.base('timeseries', title, description, unit, targets, pos) {
    fieldConfig+: {
      defaults+: {
        custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 0, showPoints: 'never', spanNulls: false },
        color: { mode: 'palette-classic' },
      },
    },
    options+: {
      legend: { displayMode: 'table', placement: 'right', showLegend: true, calcs: ['lastNotNull'] },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  },

  bargauge(title, description, unit, targets, pos, steps):: $.base('bargauge', title, description, unit, targets, pos) {
    fieldConfig+: { defaults+: { thresholds: $.thresholds(steps), color: { mode: 'thresholds' }, min: 0 } },
    options+: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      orientation: 'horizontal',
      displayMode: 'basic',
      showUnfilled: true,
    },
  },

  table(title, description, unit, targets, pos):: $.base('table', title, description, unit, targets, pos) {
    options+: { showHeader: true, cellHeight: 'sm', footer: { show: false } },
  },

  stateTimeline(title, description, unit, targets, pos, mappings):: $.base('state-timeline', title, description, unit, targets, pos) {
    fieldConfig+: { defaults+: { mappings: mappings, color: { mode: 'thresholds' }, thresholds: $.thresholds([[null, 'text']]) } },
    options+: { showValue: 'never', mergeValues: true, rowHeight: 0.9, legend: { showLegend: false } },
  },

  valueMapping(value, text, color):: {
    type: 'value',
    options: { [std.toString(value)]: { text: text, color: color } },
  },

  rangeMapping(from, to, text, color):: {
    type: 'range',
    options: { from: from, to: to, result: { text: text, color: color } },
  },

  override(field, properties):: {
    matcher: { id: 'byName', options: field },
    properties: [{ id: k, value: properties[k] } for k in std.objectFields(properties)],
  },

  // Numbers the panels in layout order; ids must be unique in a dashboard.
  withIds(panels):: [
    panels[i] { id: i + 1 }
    for i in std.range(0, std.length(panels) - 1)
  ],
}
