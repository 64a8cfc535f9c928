// A property's statistics (GET /v1/properties/{property}/stats) as three charts: opt-in rate per
// category per day, decisions per day by event type, decisions by schema version.

import {barChart, lineChart, stackedBarChart} from './charts.js';
import {formatDay, h, nextDay} from './dom.js';

const DECISION_TYPES = [
  {key: 'accept-all', label: 'accept-all', color: '#2f855a'},
  {key: 'save-selection', label: 'save-selection', color: '#2b6cb0'},
  {key: 'reject-all', label: 'reject-all', color: '#c05621'},
  {key: 'withdraw', label: 'withdraw', color: '#97266d'},
];
// Okabe–Ito colours: told apart with every common colour-vision deficiency.
const SERIES_COLOURS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#000000', '#f0e442'];

/** Every UTC day from `first` to `last`, both included ("YYYY-MM-DD"). */
export function daysBetween(first, last) {
  const days = [];
  for (let day = first; day <= last && days.length < 3660; day = nextDay(day)) days.push(day);
  return days;
}

function percent(value) {
  return `${(Math.round(value * 1000) / 10).toFixed(1)}%`;
}

/** The page's items summed per day and category, per day and type, per version, and in all. */
export function aggregate(items) {
  const optIn = new Map(); // category → Map(day → {granted, denied})
  const perDay = new Map(); // day → {type: count}
  const perVersion = new Map(); // version → {decisions, events}
  const totals = {events: 0, decisions: 0, reprompts: 0, gpc: 0, dnt: 0};
  for (const item of items) {
    for (const [category, counts] of Object.entries(item.categories)) {
      if (!optIn.has(category)) optIn.set(category, new Map());
      const days = optIn.get(category);
      const sum = days.get(item.day) || {granted: 0, denied: 0};
      sum.granted += counts.granted;
      sum.denied += counts.denied;
      days.set(item.day, sum);
    }
    const day = perDay.get(item.day) || {};
    for (const [type, count] of Object.entries(item.events)) day[type] = (day[type] || 0) + count;
    perDay.set(item.day, day);
    const version = perVersion.get(item.schema_version) || {decisions: 0, events: 0};
    version.decisions += item.decisions;
    version.events += Object.values(item.events).reduce((a, b) => a + b, 0);
    perVersion.set(item.schema_version, version);
    totals.events += Object.values(item.events).reduce((a, b) => a + b, 0);
    totals.decisions += item.decisions;
    totals.reprompts += item.events['re-prompt'] || 0;
    totals.gpc += item.signals.gpc;
    totals.dnt += item.signals.dnt;
  }
  return {optIn, perDay, perVersion, totals};
}

function tile(label, value, field) {
  return h('div', {class: 'tile', 'data-field': field}, h('span', {class: 'tile-value', text: String(value)}), h('span', {class: 'tile-label', text: label}));
}

/** Draw the statistics of `page` for the days `first`…`last` (UTC, included) into `container`. */
export function renderStats(container, page, first, last) {
  const days = daysBetween(first, last);
  const {optIn, perDay, perVersion, totals} = aggregate(page.items);
  container.append(
    h('p', {class: 'muted'}, `${formatDay(first)} – ${formatDay(last)} (UTC days, ${days.length} days). `,
      'Counts are exact and cover the events stored now: an erasure lowers them.'),
    h('div', {class: 'tiles'},
      tile('events', totals.events, 'events'),
      tile('decisions', totals.decisions, 'decisions'),
      tile('re-prompts', totals.reprompts, 'reprompts'),
      tile('with GPC', totals.gpc, 'gpc'),
      tile('with DNT', totals.dnt, 'dnt')));

  const categories = [...optIn.keys()].sort();
  lineChart(container, {
    id: 'chart-optin',
    title: 'Opt-in rate per category',
    description: 'Per UTC day: decisions whose effective choice (signals applied) grants the category, of all decisions that day.',
    days,
    emptyText: 'No decisions in this range',
    series: categories.map((category, index) => ({
      key: category,
      label: category,
      color: SERIES_COLOURS[index % SERIES_COLOURS.length],
      points: new Map([...optIn.get(category)].filter(([, counts]) => counts.granted + counts.denied > 0)
        .map(([day, {granted, denied}]) => {
          const value = granted / (granted + denied);
          return [day, {
            value,
            display: percent(value).slice(0, -1),
            lines: [`${category}, ${formatDay(day)}`, `${percent(value)} opted in`, `${granted} granted, ${denied} denied`],
          }];
        })),
    })),
  });

  stackedBarChart(container, {
    id: 'chart-decisions',
    title: 'Decisions per day by event type',
    description: 'The four decision types, stacked; re-prompts decide nothing and are left out.',
    days,
    stacks: DECISION_TYPES,
    values: perDay,
    emptyText: 'No decisions in this range',
    describe: (day, stack, count, total) => [`${formatDay(day)}, ${stack.label}`, `${count} of ${total} decisions`],
  });

  const versions = [...perVersion.keys()].sort((a, b) => a - b);
  barChart(container, {
    id: 'chart-versions',
    title: 'Decisions by schema version',
    description: 'Decisions made on each version the banner showed, over the whole range.',
    color: '#4c51bf',
    legend: [{key: 'decisions', label: 'decisions', color: '#4c51bf'}],
    emptyText: 'No decisions in this range',
    bars: versions.map((version) => ({
      key: `v${version}`,
      label: `v${version}`,
      value: perVersion.get(version).decisions,
      lines: [`Schema version ${version}`, `${perVersion.get(version).decisions} decisions`, `${perVersion.get(version).events} events in all`],
    })),
  });
}
