// The orange console: one page that talks to the operator API (/api/v1) with the operator's
// token as a bearer header. The token lives in sessionStorage only (never in a URL, a cookie or a
// log). Every value that comes from the server (app ids, labels, facts, commands, output) is put
// in the page as text (textContent, text nodes); nothing here builds HTML from strings.

const TOKEN_KEY = "orange.token";
const API = "/api/v1";
const PAGE = 200;
const OUTPUT_HEAD = 256 * 1024;
const OUTPUT_TAIL = 256 * 1024;
const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "expired", "lost", "skipped"]);

// ---- DOM, as text only ----

/** An element with attributes, listeners (`onclick`...) and children (nodes or text). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const main = () => document.getElementById("main");

function replace(parent, ...children) {
  parent.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

const STATE_CLASS = {
  online: "ok", succeeded: "ok", finished: "ok", accepted: "ok",
  running: "info", delivered: "info",
  queued: "muted", waiting: "muted", offline: "muted", skipped: "muted",
  pending: "warn", paused: "warn", cancelled: "warn",
  failed: "bad", timed_out: "bad", lost: "bad", expired: "bad", stopped: "bad", forgotten: "muted",
};

/** A state shown as a coloured badge that also says it in words. */
function badge(state) {
  const text = String(state ?? "unknown");
  return h("span", { class: `state state-${STATE_CLASS[text] || "muted"}`, "data-state": text }, text.replace("_", " "));
}

/** `iso` as "3 min ago" (or "in 3 min"), the exact time on hover. */
function ago(iso) {
  const at = Date.parse(iso);
  if (!iso || Number.isNaN(at)) return h("span", {}, iso ?? "never");
  const secs = Math.round((Date.now() - at) / 1000);
  const span = Math.abs(secs);
  const [n, unit] = span < 60 ? [span, "s"] : span < 3600 ? [Math.floor(span / 60), "min"]
    : span < 86400 ? [Math.floor(span / 3600), "h"] : [Math.floor(span / 86400), "d"];
  const words = span < 5 ? "just now" : secs >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
  return h("time", { datetime: iso, title: `${new Date(at).toString()} (${iso})` }, words);
}

function duration(secs) {
  if (secs === null || secs === undefined) return "";
  const d = Math.floor(secs / 86400), hours = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
  if (d > 0) return `${d} d ${hours} h`;
  if (hours > 0) return `${hours} h ${m} min`;
  if (m > 0) return `${m} min`;
  return `${secs} s`;
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** A modal question; resolves true on confirm, false on cancel or Escape. */
function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    // The page behind is out of reach (Tab, clicks) while the question is open.
    const behind = [document.querySelector("header"), main()];
    const opener = document.activeElement;
    const done = (answer) => {
      backdrop.remove();
      for (const el of behind) el.inert = false;
      if (opener instanceof HTMLElement) opener.focus();
      resolve(answer);
    };
    const yes = h("button", { type: "button", id: "confirm-yes", onclick: () => done(true) }, confirmLabel);
    const no = h("button", { type: "button", class: "quiet", onclick: () => done(false) }, "Cancel");
    const backdrop = h("div", { class: "dialog-backdrop" },
      h("div", { class: "dialog", role: "dialog", "aria-modal": "true", "aria-labelledby": "dialog-title",
        onkeydown: (e) => { if (e.key === "Escape") done(false); } },
      h("h2", { id: "dialog-title" }, title), h("p", {}, text), h("div", { class: "actions" }, yes, no)));
    document.body.append(backdrop);
    for (const el of behind) el.inert = true;
    yes.focus();
  });
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

/** One call of the operator API; the error carries the server's own words. */
async function api(method, path, body, { signal, bearer } = {}) {
  const headers = { Authorization: `Bearer ${bearer ?? token() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const message = (json && json.error) || text || `HTTP ${response.status}`;
    if (response.status === 401 && bearer === undefined) signOut(message);
    throw new ApiError(response.status, message);
  }
  return json;
}

// ---- routing ----

let viewAbort = null;

/** The current hash as a view name, its path words and its query. */
function location_() {
  const [path, query = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...words] = path.split("/");
  return { name, words: words.map(decodeURIComponent), query: new URLSearchParams(query) };
}

const VIEWS = { fleet: viewFleet, run: viewRun, jobs: viewJobs, job: viewJob, task: viewTask, audit: viewAudit };

/** Who the token is (`GET /whoami`: name, role, scope), asked once per sign-in. */
let me = null;
const ROLES = ["viewer", "operator", "admin"];

/** True when the signed-in operator's role is `role` or above. The server decides; the page
 * only leaves out what would be refused. */
function may(role) {
  return me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

function route() {
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  const nav = document.getElementById("nav");
  if (!token()) {
    nav.hidden = true;
    viewSignIn();
    return;
  }
  const signal = viewAbort.signal;
  const known = me ? Promise.resolve(me) : api("GET", "/whoami", undefined, { signal });
  known.then((who) => {
    me = who;
    if (!signal.aborted) show(nav, signal);
  }).catch((error) => {
    if (!signal.aborted) replace(main(), errorBox(error));
  });
}

/** Shows the view the location names, with the links and actions the role allows. */
function show(nav, signal) {
  nav.hidden = false;
  const { name, words, query } = location_();
  const runs = may("operator");
  const view = VIEWS[name] && (name !== "run" || runs) ? name : "fleet";
  for (const link of nav.querySelectorAll("a[data-view]")) {
    link.hidden = link.dataset.view === "run" && !runs;
    const current = link.dataset.view === view || (view === "job" && link.dataset.view === "jobs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const scope = Object.entries(me.scope || {}).map(([k, v]) => `${k}=${v}`).join(",");
  const identity = document.getElementById("whoami");
  identity.textContent = `${me.name} (${me.role}${scope ? `, ${scope}` : ""})`;
  identity.dataset.role = me.role;
  replace(main());
  VIEWS[view](main(), words, query, signal).catch((error) => {
    if (!signal.aborted) main().append(errorBox(error));
  });
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  if (viewAbort) viewAbort.abort();
  document.getElementById("nav").hidden = true;
  viewSignIn(message);
}

// ---- sign-in ----

function viewSignIn(message) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true, class: "wide",
    "aria-describedby": "token-help" });
  const failure = h("div", { id: "signin-error" }, message ? errorBox(message) : null);
  const form = h("form", { class: "panel signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("label", {}, "Operator token", input),
    h("p", { class: "note", id: "token-help" },
      "The token is kept in this tab only (sessionStorage) and sent as a bearer header."),
    failure,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    replace(failure);
    try {
      await api("GET", "/agents?limit=1", undefined, { bearer: candidate });
      sessionStorage.setItem(TOKEN_KEY, candidate);
      me = null;
      if (!location_().name) window.location.hash = "#/fleet";
      route();
    } catch (error) {
      replace(failure, errorBox(error));
    }
  });
  replace(main(), form);
  input.focus();
}

// ---- fleet ----

function presence(agent) {
  if (agent.status === "pending") return "pending";
  return agent.online ? "online" : "offline";
}

function labelChips(labels) {
  return h("div", { class: "chips" }, Object.entries(labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)));
}

/** "role=web, env=prod" as label pairs; the server checks their syntax. */
function labelPairs(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

async function viewFleet(root, _words, query, signal) {
  const labels = query.get("label") ?? "";
  const status = query.get("status") ?? "";
  const labelInput = h("input", { id: "fleet-labels", value: labels, placeholder: "role=web,env=prod", class: "wide" });
  const statusSelect = h("select", { id: "fleet-status" },
    ["", "online", "offline", "pending"].map((s) => h("option", { value: s, selected: s === status }, s || "any")));
  const form = h("form", { class: "row", id: "fleet-filter" },
    h("label", {}, "Labels", labelInput), h("label", {}, "Status", statusSelect),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (labelInput.value.trim()) next.set("label", labelInput.value.trim());
    if (statusSelect.value) next.set("status", statusSelect.value);
    window.location.hash = `#/fleet?${next}`;
  });
  const body = h("tbody", { id: "fleet-rows" });
  const summary = h("p", { class: "note", id: "fleet-summary" }, "Loading…");
  const more = h("div");
  const table = h("div", { class: "scroll" }, h("table", { id: "fleet" },
    h("thead", {}, h("tr", {}, ["App id", "Status", "Labels", "OS", "Kernel", "IPs", "Uptime", "Last seen", ""].map(
      (t, i) => h("th", { class: [4, 5].includes(i) ? "hide-narrow" : null }, t)))), body));
  replace(root, h("h1", {}, "Fleet"), form, summary, table, more);

  let shown = 0;
  const load = async (after) => {
    const params = new URLSearchParams();
    for (const pair of labelPairs(labels)) params.append("label", pair);
    if (status) params.set("status", status);
    params.set("limit", String(PAGE));
    if (after) params.set("after", after);
    const list = await api("GET", `/agents?${params}`, undefined, { signal });
    for (const agent of list.agents) body.append(agentRow(agent));
    shown += list.agents.length;
    summary.textContent = `${shown} agent${shown === 1 ? "" : "s"}${list.next ? " shown, more below" : ""}`;
    replace(more, list.next ? h("button", { type: "button", class: "quiet", id: "fleet-more",
      onclick: () => load(list.next).catch((e) => more.append(errorBox(e))) }, "Show more") : null);
  };
  await load(null);
  performance.mark("orange:fleet-shown");
}

function agentRow(agent) {
  const facts = agent.facts || {};
  const state = presence(agent);
  const actions = h("td", {});
  if (state === "pending" && may("admin")) {
    const act = (what) => async () => {
      try {
        await api("POST", `/agents/${encodeURIComponent(agent.app_id)}/${what}`);
        route();
      } catch (error) {
        actions.append(errorBox(error));
      }
    };
    actions.append(h("button", { type: "button", onclick: act("accept") }, "Accept"), " ",
      h("button", { type: "button", class: "quiet", onclick: act("forget") }, "Forget"));
  }
  return h("tr", { "data-app-id": agent.app_id },
    h("td", {}, h("code", {}, agent.app_id), agent.hostname && agent.hostname !== agent.app_id
      ? h("div", { class: "note" }, agent.hostname) : null),
    h("td", {}, badge(state)),
    h("td", {}, labelChips(agent.labels)),
    h("td", {}, [facts.os_name, facts.os_version].filter(Boolean).join(" ")),
    h("td", { class: "hide-narrow" }, facts.kernel ?? ""),
    h("td", { class: "hide-narrow" }, (facts.ips || []).join(", ")),
    h("td", {}, duration(facts.uptime_secs)),
    h("td", {}, ago(agent.last_seen)),
    actions);
}

// ---- run ----

function targetsOf(mode, text) {
  if (mode === "all") return { all: true };
  if (mode === "labels") {
    const labels = {};
    for (const pair of labelPairs(text)) {
      const at = pair.indexOf("=");
      if (at > 0) labels[pair.slice(0, at)] = pair.slice(at + 1);
      else throw new Error(`label ${JSON.stringify(pair)} is not key=value`);
    }
    return { labels };
  }
  return { app_ids: text.split(/[\s,]+/).filter(Boolean) };
}

async function viewRun(root, _words, query, signal) {
  const modes = [["app_ids", "Hosts"], ["labels", "Label selector"], ["all", "All hosts"]];
  const initial = query.get("mode") || "labels";
  const radios = modes.map(([value, text]) => h("label", { class: "inline" },
    h("input", { type: "radio", name: "mode", value, checked: value === initial }), text));
  const targetInput = h("input", { id: "run-targets", class: "wide", placeholder: "role=web", value: query.get("targets") ?? "" });
  const command = h("textarea", { id: "run-command", required: true, placeholder: "uptime" });
  const timeout = h("input", { id: "run-timeout", type: "number", min: "1", placeholder: "600" });
  const concurrency = h("input", { id: "run-concurrency", placeholder: "10 or 10%" });
  const maxErrors = h("input", { id: "run-max-errors", placeholder: "0 or 5%" });
  const count = h("p", { id: "run-count", class: "note", "aria-live": "polite" }, "");
  const failure = h("div", { id: "run-error" });
  const mode = () => radios.map((r) => r.querySelector("input")).find((r) => r.checked).value;
  const request = () => {
    const body = { targets: targetsOf(mode(), targetInput.value), task_type: "shell", payload: command.value };
    if (timeout.value) body.timeout_secs = Number(timeout.value);
    if (concurrency.value.trim()) body.max_concurrency = concurrency.value.trim();
    if (maxErrors.value.trim()) body.max_errors = maxErrors.value.trim();
    return body;
  };
  let countTimer = null;
  const recount = () => {
    clearTimeout(countTimer);
    targetInput.disabled = mode() === "all";
    countTimer = setTimeout(async () => {
      try {
        const found = await api("POST", "/jobs/dry-run", { ...request(), payload: command.value || "true" }, { signal });
        const offline = (found.offline || []).length;
        count.textContent = `${found.app_ids.length} host${found.app_ids.length === 1 ? "" : "s"} match`
          + (offline ? `, ${offline} of them offline` : "");
        count.dataset.count = String(found.app_ids.length);
      } catch (error) {
        if (!signal.aborted) count.textContent = error.message;
        delete count.dataset.count;
      }
    }, 300);
  };
  for (const input of [targetInput, ...radios.map((r) => r.querySelector("input"))]) input.addEventListener("input", recount);
  const form = h("form", { class: "panel", id: "run-form" },
    h("div", { class: "row", role: "radiogroup", "aria-label": "Targets" }, radios),
    h("div", { class: "row" }, h("label", {}, "Targets (app ids, or a label selector)", targetInput)), count,
    h("label", {}, "Command (run with sh -c on each host)", command),
    h("div", { class: "row" }, h("label", {}, "Timeout (s)", timeout), h("label", {}, "Max concurrency", concurrency),
      h("label", {}, "Max errors", maxErrors)),
    failure, h("div", { class: "actions" }, h("button", { type: "submit", id: "run-submit" }, "Run…")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(failure);
    try {
      const body = request();
      const found = await api("POST", "/jobs/dry-run", body, { signal });
      const hosts = found.app_ids.length;
      if (hosts === 0) throw new Error("no host matches these targets");
      const sure = await confirmDialog("Run this command?",
        `${command.value} — on ${hosts} host${hosts === 1 ? "" : "s"}.`, `Run on ${hosts} host${hosts === 1 ? "" : "s"}`);
      if (!sure) return;
      const job = await api("POST", "/jobs", body, { signal });
      window.location.hash = `#/job/${encodeURIComponent(job.job_id)}`;
    } catch (error) {
      replace(failure, errorBox(error));
    }
  });
  replace(root, h("h1", {}, "Run a command"), form);
  recount();
}

// ---- jobs ----

async function viewJobs(root, _words, _query, signal) {
  const list = await api("GET", "/jobs", undefined, { signal });
  const rows = list.jobs.map((job) => h("tr", {},
    h("td", {}, h("a", { href: `#/job/${encodeURIComponent(job.job_id)}` }, h("code", {}, job.job_id.slice(0, 13)))),
    h("td", {}, ago(job.created_at)), h("td", {}, badge(job.state)), h("td", {}, h("code", {}, job.payload)),
    h("td", {}, String(job.targets)), h("td", {}, countChips(job.counts))));
  replace(root, h("h1", {}, "Jobs"), rows.length ? h("div", { class: "scroll" }, h("table", { id: "jobs" },
    h("thead", {}, h("tr", {}, ["Job", "Created", "State", "Command", "Hosts", "Tasks"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows))) : h("p", { class: "note" }, "No job yet: run one from Run."));
}

function countChips(counts) {
  return h("div", { class: "counts" }, Object.entries(counts || {}).filter(([, n]) => n > 0)
    .map(([state, n]) => h("span", { "data-count": state }, badge(state), " ", String(n))));
}

function progress(job) {
  const c = job.counts || {};
  const total = Math.max(job.targets, 1);
  const bad = (c.failed || 0) + (c.timed_out || 0) + (c.lost || 0) + (c.expired || 0) + (c.cancelled || 0);
  const part = (n, cls) => h("span", { class: cls, style: null, "data-width": String(n) });
  const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(job.targets),
    "aria-valuenow": String((c.succeeded || 0) + bad) },
  part(c.succeeded || 0, "ok"), part(bad, "bad"), part((c.running || 0) + (c.delivered || 0), "run"));
  // Widths through the CSS object model: no inline style attribute, which the policy forbids.
  for (const span of bar.children) span.style.width = `${(100 * Number(span.dataset.width)) / total}%`;
  return bar;
}

/** The job, drawn anew at every version: the server holds each ask (`?after_version=&wait=`)
 * until the job changes, and the groups and results are read only then. */
async function viewJob(root, [jobId], _query, signal) {
  const path = `/jobs/${encodeURIComponent(jobId)}`;
  let version = null;
  for (;;) {
    const wait = version === null ? "" : `?after_version=${version}&wait=20`;
    const job = await api("GET", path + wait, undefined, { signal });
    if (job.version !== version) {
      version = job.version;
      const [groups, results] = await Promise.all([
        api("GET", `${path}/groups`, undefined, { signal }),
        api("GET", `${path}/results?limit=1000`, undefined, { signal }),
      ]);
      renderJob(root, job, groups.groups, results.results);
    }
    if (job.done) return;
  }
}

function renderJob(root, job, groups, results) {
  const taskOf = new Map(results.map((r) => [r.app_id, r.task_id]));
  const act = (what) => async () => {
    try {
      await api("POST", `/jobs/${encodeURIComponent(job.job_id)}/${what}`);
    } catch (error) {
      root.append(errorBox(error));
    }
  };
  const buttons = [];
  // A viewer gets no action on a job.
  const acts = may("operator");
  if (acts && job.state === "running") buttons.push(h("button", { type: "button", class: "quiet", id: "job-pause", onclick: act("pause") }, "Pause"));
  if (acts && job.state === "paused") buttons.push(h("button", { type: "button", id: "job-resume", onclick: act("resume") }, "Resume"));
  if (acts && !job.done) buttons.push(h("button", { type: "button", class: "danger", id: "job-cancel", onclick: act("cancel") }, "Cancel"));
  const hostLink = (appId) => {
    const task = taskOf.get(appId);
    return task ? h("a", { class: "chip", href: `#/task/${encodeURIComponent(task)}` }, appId) : h("span", { class: "chip" }, appId);
  };
  replace(root,
    h("h1", {}, "Job ", h("code", {}, job.job_id)),
    h("div", { class: "panel", id: "job" },
      h("div", { class: "row" }, badge(job.state), h("span", { class: "note" }, "created ", ago(job.created_at)),
        h("span", { class: "note" }, `${job.targets} host${job.targets === 1 ? "" : "s"}`)),
      h("pre", { id: "job-command" }, job.payload),
      progress(job), countChips(job.counts), h("div", { class: "actions" }, buttons)),
    h("h2", {}, "Outputs"),
    h("div", { id: "job-groups" }, groups.length ? groups.map((group) => h("div", { class: "group panel" },
      h("h3", {}, badge(group.state),
        group.exit_code !== null && group.exit_code !== undefined ? h("span", {}, `exit ${group.exit_code}`) : null,
        h("span", {}, `${group.count} host${group.count === 1 ? "" : "s"}`)),
      h("div", { class: "chips" }, group.app_ids.map(hostLink)),
      group.stdout ? h("pre", { class: "stdout" }, shownText(group.stdout, group.stdout_encoding)) : null,
      group.stderr ? h("pre", { class: "stderr" }, shownText(group.stderr, group.stderr_encoding)) : null,
      group.error ? h("p", { class: "error" }, group.error) : null)) : h("p", { class: "note" }, "No output yet.")),
    h("h2", {}, "Hosts"),
    h("div", { class: "scroll" }, h("table", { id: "job-results" },
      h("thead", {}, h("tr", {}, ["Host", "State", "Exit", "Duration"].map((t) => h("th", {}, t)))),
      h("tbody", {}, results.map((r) => h("tr", {}, h("td", {}, hostLink(r.app_id)), h("td", {}, badge(r.state)),
        h("td", {}, r.exit_code ?? ""), h("td", {}, r.duration_ms !== null && r.duration_ms !== undefined ? `${r.duration_ms} ms` : "")))))));
}

/** Text of an API byte field: itself, or its base64 decoded with replacement characters. */
function shownText(data, encoding) {
  if (encoding !== "base64") return data;
  return new TextDecoder("utf-8", { fatal: false }).decode(base64Bytes(data));
}

function base64Bytes(data) {
  const raw = atob(data);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// ---- task ----

/** The output of one stream as shown: the head and the tail, and the whole raw bytes kept for a download. */
class StreamView {
  constructor(name) {
    this.name = name;
    this.raw = [];
    this.rawBytes = 0;
    this.headBytes = 0;
    this.tail = [];
    this.tailBytes = 0;
    this.binary = false;
    this.url = null;
    this.head = h("span", { class: name });
    this.gap = h("span", { class: "note" });
    this.tailNode = h("span", { class: name });
  }

  add(bytes, encoded) {
    this.raw.push(bytes);
    this.rawBytes += bytes.length;
    if (encoded) this.binary = true;
    const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
    if (this.headBytes < OUTPUT_HEAD) {
      this.head.append(document.createTextNode(text));
      this.headBytes += bytes.length;
      return;
    }
    this.tail.push(text);
    this.tailBytes += bytes.length;
    while (this.tailBytes > OUTPUT_TAIL && this.tail.length > 1) {
      this.tailBytes -= new TextEncoder().encode(this.tail.shift()).length;
    }
    const hidden = this.rawBytes - this.headBytes - this.tailBytes;
    this.gap.textContent = hidden > 0 ? `\n[… ${hidden} bytes of ${this.name} not shown here: download it …]\n` : "";
    this.tailNode.textContent = this.tail.join("");
  }

  /** Points `link` at the raw bytes received so far, in an object URL made now: one per stream
   * at a time, the one made before revoked. */
  download(link) {
    this.revoke();
    this.url = URL.createObjectURL(new Blob(this.raw, { type: "application/octet-stream" }));
    link.href = this.url;
  }

  revoke() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }
}

async function viewTask(root, [taskId], _query, signal) {
  const path = `/tasks/${encodeURIComponent(taskId)}`;
  const details = h("div", { id: "task-details" });
  const notes = h("div", { id: "task-notes" });
  const streams = { stdout: new StreamView("stdout"), stderr: new StreamView("stderr") };
  signal.addEventListener("abort", () => Object.values(streams).forEach((s) => s.revoke()), { once: true });
  const output = h("pre", { id: "task-output", "aria-live": "polite" },
    streams.stdout.head, streams.stdout.gap, streams.stdout.tailNode,
    streams.stderr.head, streams.stderr.gap, streams.stderr.tailNode);
  const downloads = h("div", { class: "actions", id: "task-downloads" });
  replace(root, h("h1", {}, "Task ", h("code", {}, taskId)), details, h("h2", {}, "Output"), notes, output, downloads);

  const showDetails = async () => renderTaskDetails(details, await api("GET", path, undefined, { signal }));
  await showDetails();
  let after = 0;
  for (;;) {
    const page = await api("GET", `${path}/output?after=${after}&wait=20`, undefined, { signal });
    for (const chunk of page.chunks) {
      const bytes = chunk.encoding === "base64" ? base64Bytes(chunk.data) : new TextEncoder().encode(chunk.data);
      (streams[chunk.stream] || streams.stdout).add(bytes, chunk.encoding === "base64");
    }
    after = page.next;
    const status = details.querySelector("[data-field=status]");
    if (status && status.dataset.state !== page.status) await showDetails();
    replace(notes,
      page.dropped_bytes > 0 ? h("p", { class: "note" },
        `${page.dropped_bytes} bytes from the middle of this output were dropped by the server's output cap.`) : null,
      streams.stdout.binary || streams.stderr.binary ? h("p", { class: "note" },
        "This output is not valid UTF-8: it is shown with replacement characters; download it for the exact bytes.") : null);
    replace(downloads, Object.values(streams).filter((s) => s.rawBytes > 0).map((s) =>
      h("a", { href: "#", download: `${taskId}.${s.name}`, class: "chip", onclick: (e) => s.download(e.currentTarget) },
        `Download ${s.name} (${s.rawBytes} bytes)`)));
    if (page.done) {
      await showDetails();
      return;
    }
  }
}

function renderTaskDetails(root, task) {
  const final = FINAL.has(task.status);
  const cancel = final || !may("operator") ? null : h("button", { type: "button", class: "danger", id: "task-cancel", onclick: async () => {
    try {
      await api("POST", `/tasks/${encodeURIComponent(task.task_id)}/cancel`, {});
    } catch (error) {
      root.append(errorBox(error));
    }
  } }, "Cancel");
  const facts = [
    ["Agent", h("code", {}, task.app_id)],
    ["State", h("span", { "data-field": "status", "data-state": task.status }, badge(task.status))],
    ["Exit code", task.exit_code ?? ""],
    ["Type", task.task_type],
    ["Command", h("code", { id: "task-command" }, task.payload)],
    ["Timeout", `${task.timeout_secs} s`],
    ["Duration", task.duration_ms !== null && task.duration_ms !== undefined ? `${task.duration_ms} ms` : ""],
  ];
  if (task.error) facts.push(["Error", h("span", { class: "error" }, task.error)]);
  replace(root, h("div", { class: "panel" },
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "History"),
    h("ol", { id: "task-history" }, (task.history || []).map((t) => h("li", {}, badge(t.status), " ", ago(t.at)))),
    h("div", { class: "actions" }, cancel)));
}

// ---- audit ----

async function viewAudit(root, _words, query, signal) {
  const kind = query.get("kind") || "operator";
  const select = h("select", { id: "audit-kind", onchange: () => { window.location.hash = `#/audit?kind=${select.value}`; } },
    ["operator", "agent", "all"].map((k) => h("option", { value: k, selected: k === kind }, k)));
  const body = h("tbody", { id: "audit-rows" });
  const more = h("div");
  replace(root, h("h1", {}, "Audit"), h("div", { class: "row" }, h("label", {}, "Entries", select)),
    h("div", { class: "scroll" }, h("table", { id: "audit" },
      h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Target", "Detail"].map((t) => h("th", {}, t)))), body)), more);
  const load = async (after) => {
    const params = new URLSearchParams({ kind, limit: "50" });
    if (after) params.set("after", after);
    const list = await api("GET", `/audit?${params}`, undefined, { signal });
    for (const entry of list.entries) {
      body.append(h("tr", {}, h("td", {}, ago(entry.at)), h("td", {}, entry.actor), h("td", {}, h("code", {}, entry.action)),
        h("td", {}, entry.target ?? ""), h("td", {}, entry.detail ?? "", entry.count > 1 ? ` (×${entry.count})` : "")));
    }
    replace(more, list.next ? h("button", { type: "button", class: "quiet", id: "audit-more",
      onclick: () => load(list.next).catch((e) => more.append(errorBox(e))) }, "Show more") : null);
  };
  await load(null);
}

// ---- start ----

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
