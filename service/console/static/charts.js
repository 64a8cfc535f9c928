// SVG charts drawn by hand: a line chart of rates per day, stacked bars per day, plain bars.
// Every mark (point, bar, bar segment) is focusable, says its numbers in `aria-label`, a <title>
// and `data-value`, and shows them in a tooltip on hover and on keyboard focus.

import {clear, formatDay, h, s} from './dom.js';

const MARGIN = {top: 16, right: 16, bottom: 36, left: 48};
const HEIGHT = 260;

// Charts redraw at their container's width whenever it changes (a window resized or turned, a
// scrollbar appearing).
const charts = new WeakMap(); // plot → chart
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = charts.get(entry.target);
    if (chart && entry.target.isConnected) chart.redraw();
    else resized.unobserve(entry.target);
  }
});

function legendList(entries) {
  return h('ul', {class: 'legend'}, entries.map((entry) => {
    const swatch = h('span', {class: `swatch swatch-${entry.shape || 'box'}`, 'aria-hidden': 'true'});
    swatch.style.backgroundColor = entry.color;
    return h('li', {'data-series': entry.key}, swatch, h('span', {text: entry.label}));
  }));
}

function placeTooltip(tooltip, plot, mark) {
  const host = plot.getBoundingClientRect();
  const box = mark.getBoundingClientRect();
  tooltip.hidden = false;
  const width = tooltip.offsetWidth;
  const height = tooltip.offsetHeight;
  // Above the mark, centred on it; where that would cover the mark (at the plot's right edge, or
  // above the tallest bar), beside it: to its left if there is room, else to its right.
  let left = box.left - host.left + box.width / 2 - width / 2;
  let top = box.top - host.top - height - 8;
  if (top < 0 || left < 0 || left + width > host.width) {
    const before = box.left - host.left - width - 8;
    left = before >= 0 ? before : Math.min(box.right - host.left + 8, host.width - width);
    top = Math.max(0, Math.min(box.top - host.top, host.height - height));
  }
  tooltip.style.left = `${Math.round(Math.max(0, left))}px`;
  tooltip.style.top = `${Math.round(top)}px`;
}

/** Make `mark` a focusable, labelled mark whose numbers show in the chart's tooltip. */
function bindMark(mark, lines, value, context) {
  const label = lines.join('. ');
  mark.setAttribute('tabindex', '0');
  mark.setAttribute('role', 'img');
  mark.setAttribute('aria-label', label);
  mark.setAttribute('data-value', String(value));
  mark.classList.add('mark');
  mark.append(s('title', {text: label}));
  const {tooltip, plot} = context;
  const show = () => {
    tooltip.replaceChildren(...lines.map((line, index) => h('div', {class: index ? null : 'tooltip-head', text: line})));
    placeTooltip(tooltip, plot, mark);
  };
  const hide = () => {
    tooltip.hidden = true;
  };
  mark.addEventListener('mouseenter', show);
  mark.addEventListener('focus', show);
  // A mark tapped (or tabbed to) keeps its numbers until it loses focus.
  mark.addEventListener('mouseleave', () => {
    if (document.activeElement !== mark) hide();
  });
  mark.addEventListener('blur', hide);
}

/** Tick values from 0 to at least `max`: whole numbers, about four steps. */
function countTicks(max) {
  const top = Math.max(1, max);
  const raw = top / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw));
  const ticks = [];
  for (let tick = 0; tick < top + step; tick += step) ticks.push(tick);
  return ticks;
}

function frame(width, title) {
  return s('svg', {
    class: 'chart-svg', width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`,
    role: 'group', 'aria-label': title,
  });
}

function yAxis(svg, width, ticks, toY, format) {
  for (const tick of ticks) {
    const y = toY(tick);
    svg.append(
      s('line', {class: 'grid', x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y}),
      s('text', {class: 'tick', x: MARGIN.left - 8, y: y + 4, 'text-anchor': 'end', text: format(tick)}));
  }
}

function xLabels(svg, labels, toX, innerWidth) {
  const room = Math.max(1, Math.floor(innerWidth / 58));
  const every = Math.max(1, Math.ceil(labels.length / room));
  labels.forEach((label, index) => {
    if ((labels.length - 1 - index) % every !== 0) return;
    svg.append(s('text', {class: 'tick', x: toX(index), y: HEIGHT - MARGIN.bottom + 18, 'text-anchor': 'middle', text: label}));
  });
}

function emptyNote(svg, width, text) {
  svg.append(s('text', {class: 'empty-note', x: width / 2, y: HEIGHT / 2, 'text-anchor': 'middle', text}));
}

/** Mount a chart in `container`: caption, legend and a plot drawn by `draw(svg, width, context)`. */
function mount(container, {id, title, description, legend, draw}) {
  const tooltip = h('div', {class: 'tooltip', id: `${id}-tooltip`, role: 'tooltip', hidden: true});
  const plot = h('div', {class: 'chart-plot'});
  container.append(h('figure', {class: 'chart', id},
    h('figcaption', {}, h('h3', {text: title}), description ? h('p', {class: 'muted', text: description}) : null),
    legend ? legendList(legend) : null,
    plot));
  const chart = {
    plot,
    width: 0,
    redraw() {
      const width = Math.max(280, Math.floor(plot.clientWidth));
      if (width === chart.width) return; // a change of height only (a full-page screenshot, say)
      chart.width = width;
      const svg = frame(width, title);
      draw(svg, width, {tooltip, plot});
      clear(plot).append(svg, tooltip);
      tooltip.hidden = true;
    },
  };
  charts.set(plot, chart);
  chart.redraw();
  resized.observe(plot);
}

/** Where each point goes: points of one day closer than a mark's size are set side by side, so
 *  every one can be seen and pointed at. */
function dodge(days, series, toX, toY, band) {
  const at = new Map();
  const gap = Math.max(3, Math.min(11, band / (series.length + 1)));
  days.forEach((day, index) => {
    const points = series
      .filter((line) => line.points.has(day))
      .map((line) => ({key: line.key, y: toY(line.points.get(day).value)}))
      .sort((a, b) => a.y - b.y);
    let cluster = [];
    const place = () => {
      cluster.forEach((point, position) => {
        at.set(`${point.key}\u0000${day}`, {x: toX(index) + (position - (cluster.length - 1) / 2) * gap, y: point.y});
      });
      cluster = [];
    };
    for (const point of points) {
      if (cluster.length && point.y - cluster[cluster.length - 1].y >= 9) place();
      cluster.push(point);
    }
    place();
  });
  return at;
}

/**
 * Rates per day, a line per series: `series` = [{key, label, color, points: Map(day → {value,
 * lines})}] with value in 0…1; a day without a point breaks the line.
 */
export function lineChart(container, {id, title, description, days, series, emptyText}) {
  mount(container, {
    id, title, description,
    legend: series.map((line) => ({...line, shape: 'line'})),
    draw(svg, width, context) {
      const innerWidth = width - MARGIN.left - MARGIN.right;
      const innerHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
      const band = innerWidth / Math.max(1, days.length);
      const toX = (index) => MARGIN.left + band * (index + 0.5);
      const toY = (value) => MARGIN.top + innerHeight * (1 - value);
      yAxis(svg, width, [0, 0.25, 0.5, 0.75, 1], toY, (tick) => `${tick * 100}%`);
      xLabels(svg, days.map((day) => formatDay(day, false)), toX, innerWidth);
      const at = dodge(days, series, toX, toY, band);
      let any = false;
      for (const line of series) {
        let path = '';
        let open = false;
        for (const day of days) {
          const spot = at.get(`${line.key}\u0000${day}`);
          if (!spot) {
            open = false;
            continue;
          }
          path += `${open ? 'L' : 'M'}${spot.x.toFixed(1)},${spot.y.toFixed(1)}`;
          open = true;
        }
        svg.append(s('path', {class: 'series-line', d: path || 'M0,0', fill: 'none', stroke: line.color, 'aria-hidden': 'true'}));
        const group = s('g', {class: 'series', 'data-series': line.key});
        for (const day of days) {
          const point = line.points.get(day);
          if (!point) continue;
          any = true;
          const spot = at.get(`${line.key}\u0000${day}`);
          const mark = s('circle', {
            cx: spot.x, cy: spot.y, r: 5, fill: '#fff', stroke: line.color,
            'stroke-width': 2.5, 'data-series': line.key, 'data-day': day,
          });
          bindMark(mark, point.lines, point.display, context);
          group.append(mark);
        }
        svg.append(group);
      }
      if (!any) emptyNote(svg, width, emptyText || 'Nothing to show in this range');
    },
  });
}

/**
 * Stacked bars per day: `stacks` = [{key, label, color}] bottom up, `values` = Map(day → {key:
 * count}); `describe(day, stack, count, total)` gives a segment's lines.
 */
export function stackedBarChart(container, {id, title, description, days, stacks, values, describe, emptyText}) {
  mount(container, {
    id, title, description, legend: stacks,
    draw(svg, width, context) {
      const innerWidth = width - MARGIN.left - MARGIN.right;
      const innerHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
      const band = innerWidth / Math.max(1, days.length);
      const barWidth = Math.max(2, Math.min(band * 0.7, 36));
      const totals = days.map((day) => stacks.reduce((sum, stack) => sum + ((values.get(day) || {})[stack.key] || 0), 0));
      const ticks = countTicks(Math.max(0, ...totals));
      const top = ticks[ticks.length - 1];
      const toX = (index) => MARGIN.left + band * (index + 0.5);
      const toY = (value) => MARGIN.top + innerHeight * (1 - value / top);
      yAxis(svg, width, ticks, toY, String);
      xLabels(svg, days.map((day) => formatDay(day, false)), toX, innerWidth);
      days.forEach((day, index) => {
        const counts = values.get(day) || {};
        let base = 0;
        for (const stack of stacks) {
          const count = counts[stack.key] || 0;
          if (!count) continue;
          const y0 = toY(base);
          const y1 = toY(base + count);
          const mark = s('rect', {
            class: 'bar', x: toX(index) - barWidth / 2, y: y1, width: barWidth, height: Math.max(1, y0 - y1),
            fill: stack.color, 'data-series': stack.key, 'data-day': day,
          });
          bindMark(mark, describe(day, stack, count, totals[index]), count, context);
          svg.append(mark);
          base += count;
        }
        if (totals[index] && band >= 20) {
          svg.append(s('text', {class: 'bar-total', x: toX(index), y: toY(totals[index]) - 5, 'text-anchor': 'middle', 'aria-hidden': 'true', text: String(totals[index])}));
        }
      });
      if (!totals.some(Boolean)) emptyNote(svg, width, emptyText || 'Nothing to show in this range');
    },
  });
}

/** One bar per entry: `bars` = [{key, label, value, lines}]. */
export function barChart(container, {id, title, description, bars, color, legend, emptyText}) {
  mount(container, {
    id, title, description, legend,
    draw(svg, width, context) {
      const innerWidth = width - MARGIN.left - MARGIN.right;
      const innerHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
      const band = innerWidth / Math.max(1, bars.length);
      const barWidth = Math.max(4, Math.min(band * 0.6, 72));
      const ticks = countTicks(Math.max(0, ...bars.map((bar) => bar.value)));
      const top = ticks[ticks.length - 1];
      const toX = (index) => MARGIN.left + band * (index + 0.5);
      const toY = (value) => MARGIN.top + innerHeight * (1 - value / top);
      yAxis(svg, width, ticks, toY, String);
      xLabels(svg, bars.map((bar) => bar.label), toX, innerWidth);
      bars.forEach((bar, index) => {
        if (!bar.value) return;
        const mark = s('rect', {
          class: 'bar', x: toX(index) - barWidth / 2, y: toY(bar.value), width: barWidth,
          height: Math.max(1, toY(0) - toY(bar.value)), fill: color, 'data-series': bar.key,
        });
        bindMark(mark, bar.lines, bar.value, context);
        svg.append(mark, s('text', {class: 'bar-total', x: toX(index), y: toY(bar.value) - 5, 'text-anchor': 'middle', 'aria-hidden': 'true', text: String(bar.value)}));
      });
      if (!bars.some((bar) => bar.value)) emptyNote(svg, width, emptyText || 'Nothing to show in this range');
    },
  });
}
