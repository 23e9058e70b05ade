// arpo dashboard: runs, live learning curves and the ARPO trajectory-tree viewer.
// Plain JavaScript module, no build step and nothing fetched from outside the controller: every call
// goes to the controller's API with the bearer token kept in this tab's sessionStorage.

const main = document.getElementById("main");
const TOKEN_KEY = "arpo-token";
let authRequired = true;
let liveStream = null; // the AbortController of the run page's event stream

// --- API -------------------------------------------------------------------------------------------

class AuthError extends Error {}

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (response.status === 401 || response.status === 403) throw new AuthError("token refused");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch { /* not JSON */ }
    throw new Error(`${response.status} ${detail}`);
  }
  return response;
}

const json = async (path) => (await api(path)).json();

// Server-sent events over fetch (EventSource cannot send the Authorization header).
async function follow(path, onEvent, signal) {
  const response = await api(path, { signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { type: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event.type = line.slice(6).trim();
        else if (line.startsWith("data:")) event.data += line.slice(5).trim();
      }
      onEvent(event);
    }
  }
}

// --- small DOM helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function fail(err) {
  if (err instanceof AuthError) return login("That token was refused.");
  if (err.name === "AbortError") return;
  show(el("p", { class: "error", role: "alert" }, `Error: ${err.message}`));
}

// --- sign-in ---------------------------------------------------------------------------------------

function login(message = "") {
  const form = document.getElementById("login-template").content.cloneNode(true);
  show(form);
  document.getElementById("login-error").textContent = message;
  document.getElementById("token").focus();
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    try {
      await api("/v1/runs?limit=1");
      document.getElementById("logout").hidden = false;
      route();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("login-error").textContent =
        err instanceof AuthError ? "That token was refused." : `Error: ${err.message}`;
    }
  });
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("logout").hidden = true;
  login();
});

// --- runs list -------------------------------------------------------------------------------------

async function runsPage() {
  const runs = await json("/v1/runs?limit=200");
  const compare = el("button", { type: "button", disabled: true }, "Compare the two selected runs");
  const chosen = new Set();
  const rows = runs.map((run) => {
    const box = el("input", { type: "checkbox", "aria-label": `select ${run.run_id} to compare` });
    box.addEventListener("change", () => {
      if (box.checked) chosen.add(run.run_id); else chosen.delete(run.run_id);
      compare.disabled = chosen.size !== 2;
    });
    return el("tr", { "data-run": run.run_id },
      el("td", {}, box),
      el("td", {}, el("a", { href: `#/runs/${run.run_id}` }, run.run_id)),
      el("td", {}, run.name || ""),
      el("td", { class: `state state-${run.state}` }, run.state),
      el("td", { class: "num" }, run.step),
      el("td", { class: "num" }, fmt(run.metrics?.accuracy)),
      el("td", { class: "num" }, fmt(run.metrics?.reward_mean)),
      el("td", {}, new Date(run.created_at).toLocaleString()));
  });
  compare.addEventListener("click", () => {
    const [a, b] = [...chosen];
    location.hash = `#/compare/${a}/${b}`;
  });
  const head = ["", "run", "name", "state", "step", "accuracy", "reward", "started"];
  show(
    el("h1", {}, "Runs"),
    runs.length === 0
      ? el("p", {}, "No runs yet: submit one with ", el("code", {}, "arpo run SPEC --remote URL"), ".")
      : el("table", { id: "runs" },
        el("caption", { class: "muted" }, "Newest first; the latest step's training accuracy and reward."),
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)),
    el("div", { class: "toolbar" }, compare),
  );
}

// --- curves ----------------------------------------------------------------------------------------

async function loadCurves(img, path) {
  const blob = await (await api(path)).blob();
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function curvesImage(runId, other) {
  const what = other ? `${runId} and ${other}` : runId;
  return el("img", {
    class: "curves",
    id: "curves",
    alt: `Learning curves of ${what}: accuracy, reward, policy entropy, entropy after tool results vs ` +
      "elsewhere, tool calls per trajectory, forks per tree, response tokens, step time split.",
  });
}

async function comparePage(a, b) {
  const img = curvesImage(a, b);
  show(
    el("h1", {}, "Compare runs"),
    el("p", {}, el("a", { href: `#/runs/${a}` }, a), " and ", el("a", { href: `#/runs/${b}` }, b),
      " on the same axes (one colour per run): ARPO vs GRPO at equal budget, for example."),
    img,
  );
  await loadCurves(img, `/v1/runs/${a}/curves.png?compare=${encodeURIComponent(b)}`);
}

// --- run page --------------------------------------------------------------------------------------

async function runPage(runId, step) {
  const run = await json(`/v1/runs/${runId}`);
  const img = curvesImage(runId);
  const status = el("p", { id: "run-status", "aria-live": "polite" });
  const stepSelect = el("select", { id: "step", "aria-label": "training step" });
  const trees = el("section", { id: "trees", "aria-label": "trajectory trees" });
  const setStatus = (r) => {
    status.textContent = `${r.state} · step ${r.step} · policy version ${r.policy_version}` +
      (r.reason ? ` · ${r.reason}` : "");
  };
  const setSteps = (n) => {
    const current = stepSelect.value;
    stepSelect.replaceChildren(...Array.from({ length: n }, (_, i) => el("option", { value: i }, `step ${i}`)));
    if (current !== "" && Number(current) < n) stepSelect.value = current;
  };
  setStatus(run);
  setSteps(run.step);
  stepSelect.addEventListener("change", () => { location.hash = `#/runs/${runId}/trees/${stepSelect.value}`; });
  show(
    el("h1", {}, run.name ? `${run.name} (${runId})` : runId),
    status,
    img,
    el("h2", {}, "Trajectory trees"),
    el("div", { class: "toolbar" },
      el("label", { for: "step" }, "Step "), stepSelect,
      el("span", { class: "legend" }, "token entropy: 0", el("span", { class: "scale", "aria-hidden": "true" }),
        "≥ 2 nats (values on hover and on focus)")),
    trees,
  );
  await loadCurves(img, `/v1/runs/${runId}/curves.png`);
  if (run.step > 0) {
    const chosen = step ?? run.step - 1;
    stepSelect.value = chosen;
    await showTrees(trees, runId, chosen);
  } else {
    trees.append(el("p", { class: "muted" }, "No completed step yet."));
  }
  liveStream = new AbortController();
  let pending = null;
  follow(`/v1/runs/${runId}/events`, async (event) => {
    if (event.type !== "metrics" && event.type !== "state") return;
    const latest = await json(`/v1/runs/${runId}`);
    setStatus(latest);
    setSteps(latest.step);
    clearTimeout(pending);
    pending = setTimeout(() => loadCurves(img, `/v1/runs/${runId}/curves.png`).catch(fail), 1000);
  }, liveStream.signal).catch(fail);
}

// --- tree viewer -----------------------------------------------------------------------------------

function entropyColor(h) {
  const t = Math.max(0, Math.min(1, h / 2));
  const [r, g, b] = t < 0.5
    ? [255, 255 - (41 * t) / 0.5, 255 - (153 * t) / 0.5]
    : [255 - (11 * (t - 0.5)) / 0.5, 214 - (105 * (t - 0.5)) / 0.5, 102 - (35 * (t - 0.5)) / 0.5];
  return `rgb(${r | 0}, ${g | 0}, ${b | 0})`;
}

function tokensOf(node) {
  return el("div", { class: "tokens" }, node.tokens.map((t) => t.trained
    ? el("span", { class: "tok", style: `background:${entropyColor(t.entropy)}`, title: `entropy ${fmt(t.entropy)} nats` }, t.text)
    : el("span", { class: "tok result", title: "tool result / prompt (not trained)" }, t.text)));
}

function describe(node, leaf) {
  const trained = node.tokens.filter((t) => t.trained);
  const top = trained.reduce((a, t) => (a && a.entropy >= t.entropy ? a : t), null);
  const parts = [`segment ${node.node_id}`];
  if (node.entropy_mean !== null) parts.push(`mean entropy ${fmt(node.entropy_mean)} nats`);
  if (top) parts.push(`highest ${fmt(top.entropy)} at "${top.text}"`);
  if (node.children >= 2) parts.push(`branch point with ${node.children} branches`);
  if (node.tool) parts.push(`calls ${node.tool}`);
  if (leaf) parts.push(`leaf: reward ${fmt(leaf.reward)}, advantage ${fmt(leaf.advantage)}, answer ${leaf.answer ?? "none"}`);
  else if (node.advantage !== null) parts.push(`advantage ${fmt(node.advantage)}`);
  return parts.join("; ");
}

function treeItem(node, byParent, leaves) {
  const kids = byParent.get(node.node_id) || [];
  const leaf = leaves.get(node.node_id);
  const isRoot = node.parent_id === null;
  const badges = [];
  if (isRoot) badges.push(el("span", { class: "badge" }, "prompt"));
  if (node.children >= 2) badges.push(el("span", { class: "badge branch" }, `branch point · ${node.children} branches`));
  if (node.forked > 0) badges.push(el("span", { class: "badge branch" }, `forked ${node.forked} (ΔH ${fmt(node.delta_h, 2)})`));
  if (leaf) {
    const solved = (leaf.score ?? 0) >= 1;
    badges.push(el("span", { class: `badge leaf ${solved ? "" : "wrong"}` },
      `leaf · reward ${fmt(leaf.reward, 2)} · advantage ${fmt(leaf.advantage, 2)} · answer ${leaf.answer ?? "none"} (${solved ? "correct" : "wrong"})`));
  }
  const meta = el("div", { class: "meta" }, badges,
    !isRoot && node.entropy_mean !== null ? el("span", {}, `mean entropy ${fmt(node.entropy_mean, 2)}`) : null,
    !isRoot && !leaf && node.advantage !== null ? el("span", {}, `advantage ${fmt(node.advantage, 2)}`) : null);
  const tool = node.tool
    ? [el("div", { class: "tool" }, `${node.tool} ← ${node.tool_input}`), el("div", { class: "tool" }, `result → ${node.tool_output}`)]
    : [];
  const body = isRoot ? el("div", { class: "tokens" }, node.tokens.map((t) => t.text).join("")) : tokensOf(node);
  const item = el("li", {
    role: "treeitem",
    tabindex: "-1",
    "aria-expanded": kids.length ? "true" : null,
    "aria-label": describe(node, leaf),
    "data-node": node.node_id,
    class: [leaf ? "leaf" : "", node.children >= 2 ? "branch-point" : ""].join(" ").trim() || null,
  }, el("div", { class: "node" }, meta, body, tool));
  if (kids.length) item.append(el("ul", { role: "group" }, kids.map((k) => treeItem(k, byParent, leaves))));
  return item;
}

function renderTree(view) {
  const byParent = new Map();
  for (const node of view.nodes) {
    if (node.parent_id === null) continue;
    if (!byParent.has(node.parent_id)) byParent.set(node.parent_id, []);
    byParent.get(node.parent_id).push(node);
  }
  const leaves = new Map(view.leaves.map((l) => [l.leaf_node_id, l]));
  const root = view.nodes.find((n) => n.parent_id === null);
  const tree = el("ul", { role: "tree", id: "tree", "aria-label": `trajectory tree of prompt ${view.prompt_id}` },
    treeItem(root, byParent, leaves));
  tree.querySelector('[role="treeitem"]').tabIndex = 0;
  tree.addEventListener("keydown", (event) => treeKeys(event, tree));
  tree.addEventListener("focusin", (event) => {
    const item = event.target.closest('[role="treeitem"]');
    if (item) document.getElementById("focus-detail").textContent = item.getAttribute("aria-label");
  });
  return tree;
}

// Keyboard navigation as in the WAI-ARIA tree view pattern: up/down move, right opens or enters, left
// closes or goes to the parent, Home/End jump, Enter/Space toggles.
function treeKeys(event, tree) {
  const item = event.target.closest('[role="treeitem"]');
  if (!item) return;
  const visible = [...tree.querySelectorAll('[role="treeitem"]')].filter((i) => i.offsetParent !== null);
  const at = visible.indexOf(item);
  const go = (next) => {
    if (!next) return;
    item.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  };
  const expanded = item.getAttribute("aria-expanded");
  switch (event.key) {
    case "ArrowDown": go(visible[at + 1]); break;
    case "ArrowUp": go(visible[at - 1]); break;
    case "Home": go(visible[0]); break;
    case "End": go(visible[visible.length - 1]); break;
    case "ArrowRight":
      if (expanded === "false") item.setAttribute("aria-expanded", "true");
      else if (expanded === "true") go(item.querySelector('[role="group"] > [role="treeitem"]'));
      break;
    case "ArrowLeft":
      if (expanded === "true") item.setAttribute("aria-expanded", "false");
      else go(item.parentElement.closest('[role="treeitem"]'));
      break;
    case "Enter":
    case " ":
      if (expanded !== null) item.setAttribute("aria-expanded", expanded === "true" ? "false" : "true");
      break;
    default: return;
  }
  event.preventDefault();
}

async function showTrees(section, runId, step) {
  const views = await json(`/v1/runs/${runId}/trees/${step}/view`);
  const holder = el("div", { id: "tree-holder" });
  const detail = el("p", { id: "focus-detail", "aria-live": "polite", class: "muted" },
    "Focus the tree and use the arrow keys; each segment's entropy, tool call and leaf reward are read out here.");
  const buttons = views.map((view, i) => el("button", {
    type: "button",
    "aria-pressed": i === 0 ? "true" : "false",
    "data-tree": view.tree_id,
    onclick: (event) => {
      for (const b of buttons) b.setAttribute("aria-pressed", "false");
      event.currentTarget.setAttribute("aria-pressed", "true");
      holder.replaceChildren(summary(view), renderTree(view));
    },
  }, `${view.prompt_id} · ${view.leaves.length} leaves · ${view.branch_points} branch point${view.branch_points === 1 ? "" : "s"}`));
  section.replaceChildren(
    el("p", { class: "muted" }, `${views.length} trees at step ${step}.`),
    el("div", { class: "tree-list", role: "group", "aria-label": "trees of this step" }, buttons),
    detail,
    holder,
  );
  if (views.length) holder.replaceChildren(summary(views[0]), renderTree(views[0]));
}

function summary(view) {
  const rewards = view.leaves.map((l) => l.reward ?? 0);
  const mean = rewards.reduce((a, b) => a + b, 0) / Math.max(1, rewards.length);
  return el("p", { id: "tree-summary" },
    `Prompt ${view.prompt_id}: ${view.leaves.length} trajectories of a budget of ${view.budget}, ` +
    `${view.branch_points} branch points, mean reward ${fmt(mean, 2)}.`);
}

// --- routing ---------------------------------------------------------------------------------------

async function route() {
  liveStream?.abort();
  liveStream = null;
  if (authRequired && !sessionStorage.getItem(TOKEN_KEY)) return login();
  document.getElementById("logout").hidden = !authRequired;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "runs" && parts[1] && parts[2] === "trees") await runPage(parts[1], Number(parts[3]));
    else if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "compare" && parts[2]) await comparePage(parts[1], parts[2]);
    else await runsPage();
    main.focus();
  } catch (err) {
    fail(err);
  }
}

window.addEventListener("hashchange", route);
fetch("/healthz")
  .then((r) => r.json())
  .then((health) => { authRequired = health.auth !== false; })
  .catch(() => { /* keep asking for a token */ })
  .finally(route);
