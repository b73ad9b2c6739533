// Palaestra dashboard: one page, hash routes, plain DOM. Every value from the server is set as text
// (never as HTML), so an environment's messages cannot inject markup.
"use strict";

const main = document.getElementById("main");
let refreshTimer = null;

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch("/api/" + path, {credentials: "same-origin", ...options});
  if (response.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}
function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : "–"; }
function badge(text, kind) { return h("span", {class: "badge " + (kind || text)}, text); }
function show(...nodes) { main.replaceChildren(...nodes.flat(3).filter(n => n !== null && n !== undefined)); }
function failure(error) { show(h("p", {class: "error"}, String(error.message || error))); }
function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map(x => h("th", {class: x.endsWith("#") ? "num" : ""}, x.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

// ------------------------------------------------------------------ routing

const views = {
  catalog: viewCatalog, live: viewLive, episodes: viewEpisodes, episode: viewEpisode,
  curves: viewCurves, leaderboards: viewLeaderboards, sandboxes: viewSandboxes, play: viewPlay,
};

function route() {
  clearInterval(refreshTimer);
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "catalog").split("/");
  const arg = decodeURIComponent(rest.join("/"));
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === (name === "episode" ? "episodes" : name));
  }
  window.scrollTo(0, 0);
  (views[name] || viewCatalog)(arg).catch(failure);
}
window.addEventListener("hashchange", route);

async function start() {
  try {
    const info = await api("info");
    const who = document.getElementById("who");
    who.append(`server ${info.address} · ${info.principal}`);
    if (info.auth) who.append(" · ", h("a", {href: "/logout"}, "log out"));
    window.palaestraInfo = info;
  } catch (error) { failure(error); return; }
  route();
}

// ------------------------------------------------------------------ catalog

async function viewCatalog() {
  const envs = await api("catalog");
  const rows = envs.map(env => h("tr", {},
    h("td", {}, h("a", {href: "#/play/" + encodeURIComponent(env.id), title: "play it"}, env.id)),
    h("td", {}, env.kind.replace("_", " ")),
    h("td", {}, env.agents.join(", ")),
    h("td", {}, env.action_space.kind),
    h("td", {}, env.reward_components.map(c => badge(c.name, c.kind))),
    h("td", {}, env.tags.join(", ")),
    h("td", {class: "num"}, env.recorded ? h("a", {href: "#/episodes/" + encodeURIComponent(env.id)}, env.recorded.episodes) : "0"),
    h("td", {class: "num"}, env.recorded ? h("a", {href: "#/curves/" + encodeURIComponent(env.id)}, fmt(env.recorded.mean_reward)) : "–"),
    h("td", {class: "muted"}, env.description)));
  show(h("h1", {}, `Catalog (${envs.length} environments)`),
    table(["id", "kind", "agents", "actions", "reward components", "tags", "recorded#", "mean reward#", "description"], rows, {id: "catalog"}));
}

// ------------------------------------------------------------------ live episodes

async function viewLive() {
  const render = async () => {
    const live = await api("live");
    const rows = live.map(e => h("tr", {},
      h("td", {}, e.episode_id.slice(0, 12)), h("td", {}, e.env_id), h("td", {title: e.owner}, e.principal || e.owner),
      h("td", {class: "num"}, e.steps), h("td", {}, Object.entries(e.returns).map(([a, r]) => `${a}: ${fmt(r)}`).join(", ")),
      h("td", {class: "num"}, fmt(e.age_s, 1)), h("td", {class: "num"}, fmt(e.idle_s, 1)),
      h("td", {}, e.infra_failure ? badge("infra failure", "infra") : e.finished ? badge("finished", "ok") : e.played_here ? badge("played here", "") : "")));
    show(h("h1", {}, `Live episodes (${live.length})`), h("p", {class: "muted"}, "Open episodes on the server; refreshed every 2 s."),
      table(["episode", "environment", "who", "steps#", "returns", "age s#", "idle s#", "state"], rows, {id: "live"}));
  };
  await render();
  refreshTimer = setInterval(() => render().catch(failure), 2000);
}

// ------------------------------------------------------------------ recorded episodes

async function viewEpisodes(envId) {
  const query = envId ? "?env_id=" + encodeURIComponent(envId) : "";
  const episodes = await api("episodes" + query);
  const rows = episodes.map(e => h("tr", {},
    h("td", {}, h("a", {href: "#/episode/" + e.episode_id, class: "episode-link"}, e.episode_id.slice(0, 12))),
    h("td", {}, e.env_id), h("td", {class: "num"}, fmt(e.seed)), h("td", {}, e.principal),
    h("td", {class: "num"}, e.steps), h("td", {class: "num"}, fmt(e.reward)),
    h("td", {}, e.infra_source ? badge("infra: " + e.infra_source, "infra") : e.terminated ? "terminated" : e.truncated ? "truncated" : e.close_reason),
    h("td", {}, when(e.finished_at))));
  show(h("h1", {}, envId ? `Episodes of ${envId}` : "Recorded episodes"),
    table(["episode", "environment", "seed#", "who", "steps#", "reward#", "end", "finished"], rows, {id: "episodes"}));
}

function messageNode(m) {
  return h("div", {class: "msg " + m.role},
    h("span", {class: "role"}, m.role + (m.name ? ` · ${m.name}` : "") + (m.tool_call_id ? ` · ${m.tool_call_id}` : "")),
    m.content,
    (m.tool_calls || []).map(c => h("div", {class: "call tool-call"}, `→ ${c.name}(${c.arguments})`)));
}

function actionNode(action) {
  if (action && typeof action === "object" && !Array.isArray(action)) return messageNode({...action, role: "assistant"});
  return messageNode({role: "assistant", content: JSON.stringify(action).replace(/^"|"$/g, "")});
}

function componentsNode(components) {
  return h("div", {class: "components"}, components.map(c =>
    h("span", {class: "component", title: c.detail || ""}, badge(`${c.name} = ${fmt(c.value)}` + (c.weight !== 1 ? ` ×${fmt(c.weight, 2)}` : ""), c.status === "ok" ? c.kind : c.status),
      c.status !== "ok" ? badge(c.status) : null)));
}

function checklistNode(items) {
  return h("ul", {class: "checklist"}, items.map(item => h("li", {class: "checklist-item"},
    badge(item.status !== "ok" ? item.status : item.passed ? "passed" : "failed"),
    ` ${item.item_id} (turn ${item.turn}, weight ${fmt(item.weight, 2)}) `, h("span", {class: "muted"}, item.reason),
    item.evidence.map(e => h("div", {class: "evidence"}, `evidence (turn ${e.turn}, step ${e.step}): ${e.snippet}`)))));
}

async function viewEpisode(episodeId) {
  let e = null;
  for (let attempt = 0; e === null; attempt++) {  // a just-finished episode reaches the store within a second
    try { e = await api("episodes/" + encodeURIComponent(episodeId)); } catch (error) {
      if (attempt >= 5 || !String(error.message).startsWith("no recorded episode")) throw error;
      await new Promise(resolve => setTimeout(resolve, 500));
    }
  }
  const summary = h("div", {class: "panel"}, h("dl", {class: "kv"}, [
    ["environment", e.env_id], ["episode", e.episode_id], ["seed", fmt(e.seed)], ["task", fmt(e.task)],
    ["who", e.principal], ["runs", e.runs.map(r => `${r.kind}: ${r.model}`).join(", ") || "–"],
    ["group", e.group_id || "–"], ["options", JSON.stringify(e.options)],
    ["opened", when(e.opened_at)], ["wall / env seconds", `${fmt(e.wall_seconds)} / ${fmt(e.env_seconds)}`],
    ["steps", e.steps], ["end", e.infra_source ? `infrastructure failure (${e.infra_source}): ${e.infra_message}` : e.terminated ? "terminated" : e.truncated ? "truncated" : e.close_reason],
  ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  const totals = table(["agent", "return#", "component", "kind", "total#", "count#", "not ok#"],
    e.agents.flatMap(a => (a.components.length ? a.components : [{}]).map((c, i) => h("tr", {},
      h("td", {}, i ? "" : a.agent), h("td", {class: "num"}, i ? "" : fmt(a.return)),
      h("td", {}, c.name || "–"), h("td", {}, c.kind || ""), h("td", {class: "num"}, fmt(c.total)),
      h("td", {class: "num"}, fmt(c.count)), h("td", {class: "num"}, c.not_ok ? badge(String(c.not_ok), "error") : fmt(c.not_ok))))),
    {id: "totals"});
  const steps = e.trajectory.map(entry => {
    const agents = new Set([...Object.keys(entry.actions || {}), ...Object.keys(entry.messages || {}),
      ...Object.keys(entry.components || {}), ...Object.keys(entry.checklist || {})]);
    return h("div", {class: "step"},
      h("div", {class: "head"}, entry.step === 0 && !Object.keys(entry.actions || {}).length ? "reset" : `step ${entry.step}`,
        entry.done ? " · done" : "", entry.infra_failure ? ` · infrastructure failure: ${entry.infra_failure}` : ""),
      [...agents].map(agent => h("div", {class: "chat"},
        agents.size > 1 ? h("div", {class: "muted"}, agent) : null,
        agent in (entry.actions || {}) ? actionNode(entry.actions[agent]) : null,
        ((entry.messages || {})[agent] || []).map(messageNode),
        (entry.components || {})[agent] && entry.components[agent].length ? componentsNode(entry.components[agent]) : null,
        (entry.checklist || {})[agent] ? checklistNode(entry.checklist[agent]) : null)));
  });
  show(h("h1", {}, `Episode ${e.episode_id.slice(0, 12)} · ${e.env_id} · reward ${fmt(e.reward)}`),
    summary, h("h2", {}, "Reward components"), totals, h("h2", {}, "Trajectory"), h("div", {id: "trajectory"}, steps));
}

// ------------------------------------------------------------------ reward curves

function curveSvg(points) {
  const W = 900, H = 300, P = 40;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "curve"); svg.setAttribute("width", W); svg.setAttribute("height", H);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el); return el;
  };
  if (!points.length) { add("text", {x: P, y: H / 2}, "no episodes recorded yet"); return svg; }
  const xs = points.map(p => p.time), ys = points.map(p => p.reward);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = x => P + (x1 === x0 ? (W - 2 * P) / 2 : (x - x0) / (x1 - x0) * (W - 2 * P));
  const sy = y => H - P - (y - y0) / (y1 - y0) * (H - 2 * P);
  add("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis"});
  add("line", {x1: P, y1: P, x2: P, y2: H - P, class: "axis"});
  add("text", {x: 4, y: sy(y1) + 4}, fmt(y1, 2)); add("text", {x: 4, y: sy(y0) + 4}, fmt(y0, 2));
  add("text", {x: P, y: H - 12}, when(x0)); add("text", {x: W - P - 140, y: H - 12}, when(x1));
  for (const p of points) add("circle", {cx: sx(p.time), cy: sy(p.reward), r: 2.5, class: "dot"});
  const window_ = Math.min(points.length, Math.max(5, Math.round(points.length / 20)));
  const avg = points.map((p, i) => {
    const part = ys.slice(Math.max(0, i - window_ + 1), i + 1);
    return `${sx(p.time)},${sy(part.reduce((a, b) => a + b, 0) / part.length)}`;
  });
  add("polyline", {points: avg.join(" "), class: "avg"});
  return svg;
}

async function viewCurves(envId) {
  const envs = await api("curves");
  const select = h("select", {id: "curve-env", onchange: () => { location.hash = "#/curves/" + encodeURIComponent(select.value); }},
    envs.map(e => h("option", {value: e.env_id, selected: e.env_id === envId}, `${e.env_id} (${e.episodes})`)));
  const chosen = envId || (envs[0] && envs[0].env_id);
  const points = chosen ? await api("curves?env_id=" + encodeURIComponent(chosen)) : [];
  show(h("h1", {}, "Reward curves"),
    h("div", {class: "controls"}, h("label", {}, "environment", select)),
    h("p", {class: "muted"}, "Each dot is an episode's reward (mean over agents) by finish time; the line is a moving average. Infrastructure failures are left out."),
    curveSvg(points),
    table(["environment", "episodes#", "mean reward#", "infra failures#", "last"], envs.map(e => h("tr", {},
      h("td", {}, h("a", {href: "#/curves/" + encodeURIComponent(e.env_id)}, e.env_id)), h("td", {class: "num"}, e.episodes),
      h("td", {class: "num"}, fmt(e.mean_reward)), h("td", {class: "num"}, e.infra_failures), h("td", {}, when(e.last))))));
}

// ------------------------------------------------------------------ leaderboards, sandboxes

async function viewLeaderboards() {
  const boards = await api("leaderboards");
  show(h("h1", {}, "Leaderboards"),
    h("p", {class: "muted"}, "OpenSkill (Plackett-Luce) ratings from recorded games against bots and between clients, and from tournament results files. Rating = mu - 3 sigma."),
    boards.length ? boards.map(b => [h("h2", {}, `${b.env_id} (${b.games} games)`),
      table(["#", "player", "rating#", "mu#", "sigma#", "games#", "W/D/L"], b.rows.map((r, i) => h("tr", {class: "leader-row"},
        h("td", {}, i + 1), h("td", {}, r.name), h("td", {class: "num"}, fmt(r.ordinal, 2)), h("td", {class: "num"}, fmt(r.mu, 2)),
        h("td", {class: "num"}, fmt(r.sigma, 2)), h("td", {class: "num"}, r.games), h("td", {}, `${r.wins}/${r.draws}/${r.losses}`))),
      {class: "leaderboard"})]) : h("p", {}, "No rated games yet: play a game against a bot on the Play page."));
}

async function viewSandboxes() {
  const render = async () => {
    const s = await api("sandboxes");
    show(h("h1", {}, "Sandboxes"),
      s.available ? [
        h("h2", {}, "Profiles"),
        table(["profile", "backend"], Object.entries(s.profiles).map(([p, b]) => h("tr", {}, h("td", {}, p), h("td", {}, b)))),
        h("h2", {}, "Warm pools"),
        table(["backend", "profile", "target size#", "ready#", "starting#", "start failures#"], s.pools.map(p => h("tr", {},
          h("td", {}, p.backend), h("td", {}, p.profile), h("td", {class: "num"}, p.size), h("td", {class: "num"}, p.ready),
          h("td", {class: "num"}, p.creating), h("td", {class: "num"}, p.failures))), {id: "pools"}),
      ] : h("p", {}, "This server has no sandbox layer."));
  };
  await render();
  refreshTimer = setInterval(() => render().catch(failure), 3000);
}

// ------------------------------------------------------------------ play

// Open options the play page starts with: a built-in opponent for the games (a person plays one seat).
const PLAY_PRESETS = [
  [/^games\/chess/, {opponent: "greedy"}],
  [/^games\/barter/, {opponent: "scripted"}],
  [/^games\/(tictactoe|connect4)/, {opponent: "minimax"}],
  [/^pettingzoo\//, {opponent: "random"}],
];

async function viewPlay(envId) {
  const envs = await api("catalog");
  const select = h("select", {id: "env-select"}, envs.map(e => h("option", {value: e.id, selected: e.id === envId}, e.id)));
  const seed = h("input", {id: "seed", type: "number", value: "0", style: "width:90px"});
  const options = h("input", {id: "options", value: "{}", style: "width:320px", title: "open options (JSON)"});
  const presetFor = id => {
    const spec = envs.find(e => e.id === id);
    const preset = PLAY_PRESETS.find(([pattern]) => pattern.test(id));
    return preset && spec && spec.kind === "turn_based" ? preset[1] : {};
  };
  options.value = JSON.stringify(presetFor(select.value));
  select.addEventListener("change", () => { options.value = JSON.stringify(presetFor(select.value)); });
  const board = h("div", {id: "play-area"});
  const status = h("div", {id: "play-status", class: "status"});
  const openButton = h("button", {id: "open-btn", onclick: () => playOpen(select.value, seed.value, options.value, board, status).catch(e => { status.textContent = "error: " + e.message; status.className = "status error"; })}, "Start episode");
  show(h("h1", {}, "Play"),
    h("p", {class: "muted"}, "Play any environment yourself, against the real server: your moves travel as ordinary episodes of your principal and are recorded like a model's."),
    h("div", {class: "controls"}, h("label", {}, "environment", select), h("label", {}, "seed", seed), h("label", {}, "open options", options), openButton),
    status, board);
}

async function playOpen(envId, seedText, optionsText, area, status) {
  let options;
  try { options = JSON.parse(optionsText || "{}"); } catch (error) { throw new Error("options are not JSON: " + error.message); }
  status.className = "status"; status.textContent = "opening…";
  const opened = await api("play/open", {env_id: envId, seed: seedText === "" ? null : Number(seedText), options});
  const game = {spec: opened.spec, episodeId: opened.step.episode_id, pendingCalls: [], tools: [], total: {}};
  area.replaceChildren(h("div", {class: "chat", id: "transcript"}), h("div", {id: "last-reward"}), h("div", {id: "controls"}));
  applyStep(game, opened.step, area, status);
}

function applyStep(game, step, area, status) {
  const transcript = area.querySelector("#transcript");
  const rewardBox = area.querySelector("#last-reward");
  rewardBox.replaceChildren();
  for (const [agent, result] of Object.entries(step.agents)) {
    if (result.tools && result.tools.length) game.tools = result.tools;
    for (const m of result.messages) transcript.append(messageNode(m));
    if (result.rendered) transcript.append(h("pre", {class: "board"}, result.rendered));
    else if (result.tensor) {
      const values = result.tensor.values.map(v => fmt(v, 3)).join(", ") + (result.tensor.truncated ? ", …" : "");
      transcript.append(h("pre", {class: "board observation"}, `${agent} observes [${result.tensor.shape.join("×")}]: ${values}`));
    }
    if (result.components.length) {
      game.total[agent] = (game.total[agent] || 0) + (result.reward || 0);
      rewardBox.append(h("div", {class: "panel"}, `${agent}: reward ${fmt(result.reward)} `, componentsNode(result.components),
        result.checklist.length ? checklistNode(result.checklist) : null));
    }
    game.last = result;
  }
  if (step.infra_failure) transcript.append(h("p", {class: "error"}, `infrastructure failure (${step.infra_failure.source}): ${step.infra_failure.message}`));
  game.nextAgent = step.next_agent;
  if (transcript.lastChild) transcript.lastChild.scrollIntoView({block: "nearest"});
  if (step.done) { finish(game, area, status); return; }
  status.className = "status"; status.textContent = `your move${step.next_agent ? " (" + step.next_agent + ")" : ""} · step ${step.step_index}`;
  renderControls(game, area, status);
}

async function send(game, action, area, status) {
  for (const button of area.querySelectorAll("#controls button")) button.disabled = true;
  status.textContent = "waiting for the server…";
  try {
    const reply = await api("play/step", {episode_id: game.episodeId, agent: game.nextAgent || "", action});
    if ("message" in action) area.querySelector("#transcript").append(actionNode(action.message));
    else if ("text" in action) area.querySelector("#transcript").append(actionNode(action.text));
    else area.querySelector("#transcript").append(actionNode(action.discrete));
    applyStep(game, reply.step, area, status);
  } catch (error) {
    status.className = "status error"; status.textContent = "refused: " + error.message;
    for (const button of area.querySelectorAll("#controls button")) button.disabled = false;
  }
}

function renderControls(game, area, status) {
  const controls = area.querySelector("#controls");
  const space = game.spec.action_space.kind;
  const last = game.last || {legal_actions: [], legal_indices: null};
  const parts = [];
  if (last.legal_actions && last.legal_actions.length) {
    parts.push(h("div", {class: "legal"}, last.legal_actions.map(a =>
      h("button", {class: "legal-action secondary", "data-action": a, onclick: () => send(game, space === "discrete" ? {discrete: last.legal_actions.indexOf(a)} : {text: a}, area, status)}, a))));
  }
  if (space === "discrete") {
    const n = game.spec.action_space.n, startAt = game.spec.action_space.start || 0;
    const legal = last.legal_indices || [...Array(n).keys()];
    if (!(last.legal_actions && last.legal_actions.length)) {
      parts.push(h("div", {class: "legal"}, legal.map(i => h("button", {class: "legal-action secondary", "data-action": String(i + startAt), onclick: () => send(game, {discrete: i + startAt}, area, status)}, String(i + startAt)))));
    }
  } else if (space === "chat") {
    const content = h("textarea", {id: "message-content", rows: 3, cols: 80, placeholder: "your message (a reply to the user ends the turn)"});
    const toolSelect = h("select", {id: "tool-name"}, game.tools.map(t => h("option", {value: t.function ? t.function.name : t.name}, t.function ? t.function.name : t.name)));
    const args = h("textarea", {id: "tool-args", rows: 2, cols: 60}, "{}");
    const pending = h("div", {id: "pending-calls"}, game.pendingCalls.map(c => h("div", {class: "call"}, `→ ${c.name}(${c.arguments})`)));
    const toolHelp = h("div", {class: "muted", id: "tool-help"});
    const describe = () => {
      const tool = game.tools.find(t => (t.function ? t.function.name : t.name) === toolSelect.value);
      const fn = tool && (tool.function || tool);
      toolHelp.textContent = fn ? `${fn.description || ""} parameters: ${JSON.stringify((fn.parameters || {}).properties || {})}` : "";
    };
    toolSelect.addEventListener("change", describe); describe();
    const addCall = h("button", {id: "add-call", class: "secondary", onclick: () => {
      try { JSON.parse(args.value); } catch (error) { status.textContent = "arguments are not JSON: " + error.message; return; }
      game.pendingCalls.push({name: toolSelect.value, arguments: args.value, id: "call_" + Math.random().toString(36).slice(2, 10)});
      pending.replaceChildren(...game.pendingCalls.map(c => h("div", {class: "call"}, `→ ${c.name}(${c.arguments})`)));
    }}, "Add tool call");
    const sendButton = h("button", {id: "send-btn", onclick: () => {
      const calls = game.pendingCalls; game.pendingCalls = [];
      send(game, {message: {content: content.value, tool_calls: calls}}, area, status);
    }}, "Send");
    parts.push(content, game.tools.length ? h("div", {class: "controls"}, h("label", {}, "tool", toolSelect), h("label", {}, "arguments (JSON)", args), addCall) : null,
      toolHelp, pending, sendButton);
  } else if (space === "text") {
    const text = h("input", {id: "text-action", size: 60, placeholder: "your move"});
    parts.push(h("div", {class: "controls"}, text, h("button", {id: "send-btn", onclick: () => send(game, {text: text.value}, area, status)}, "Send")));
  } else {
    parts.push(h("p", {class: "muted"}, `This page plays text, chat and discrete actions; ${space} actions need a client.`));
  }
  controls.replaceChildren(...parts);
}

async function finish(game, area, status) {
  area.querySelector("#controls").replaceChildren();
  status.className = "status"; status.textContent = "episode over · closing…";
  const closed = await api("play/close", {episode_id: game.episodeId});
  const s = closed.summary;
  const returns = s ? s.agents.map(a => `${a.agent}: ${fmt(a.return)}`).join(", ") : "";
  status.replaceChildren(`done · ${returns} `, window.palaestraInfo && window.palaestraInfo.store
    ? h("a", {id: "viewer-link", href: "#/episode/" + game.episodeId}, "view the recorded episode") : "");
}

start();
