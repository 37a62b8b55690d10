// PromQL building blocks shared by the alerts and the dashboard, so both
// read the exporter's metrics the same way.
{
  // `metric{<selector>, <extra matchers>}`; empty parts are left out.
  sel(selector, metric, extra=[])::
    local parts = std.filter(function(p) p != '', [selector] + extra);
    '%s{%s}' % [metric, std.join(', ', parts)],

  // Seconds in a Prometheus duration with one unit ("90s", "15m", "6h", "30d").
  seconds(duration)::
    local units = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
    local unit = duration[std.length(duration) - 1];
    assert std.objectHas(units, unit) : 'duration %s: use one of s, m, h, d, w' % duration;
    std.parseInt(std.substr(duration, 0, std.length(duration) - 1)) * units[unit],

  // Removes leading and trailing newlines. std.stripChars would do, but it
  // walks the string in jsonnet and makes rendering take seconds.
  trim(text)::
    if std.startsWith(text, '\n') then $.trim(std.substr(text, 1, std.length(text) - 1))
    else if std.endsWith(text, '\n') then $.trim(std.substr(text, 0, std.length(text) - 1))
    else text,

  // Indents every line after the first, so a multi-line expression nests
  // readably inside another.
  indent(text, spaces)::
    local pad = std.repeat(' ', spaces);
    std.join('\n' + pad, std.split($.trim(text), '\n')),

  // The increase of a counter over `window`, for counters whose series
  // appear only when the first event happens (the exporter's failure
  // counters by class). increase() needs two samples, so a series born
  // within the window with the value 1 would count 0 and the first failure
  // would be lost. A series that did not exist a window ago started from
  // zero: its whole value is its increase.
  lazyIncrease(selector, window)::
    |||
      (
        (increase(%(s)s[%(w)s]) and %(s)s offset %(w)s)
        or
        (%(s)s unless %(s)s offset %(w)s)
      )
    ||| % { s: selector, w: window },
}
