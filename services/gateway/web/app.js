// loranet's web app: chat (streamed, verified answers with their fee split) and an explorer.
// Plain JavaScript, no build step; it talks to the gateway's OpenAI API and its /v1/loranet/* JSON.
"use strict";

const KEY = "loranet.apiKey";
const COLORS = { node: "#58a6ff", developer: "#3fb950", contributor: "#d29922", verifier: "#a371f7", treasury: "#8b98a5" };
const state = { messages: [], models: [] };

// -- helpers ----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const $ = (id) => document.getElementById(id);
const short = (s, n = 10) => (s && s.length > n + 2 ? `${s.slice(0, n)}…` : s || "");

function open(wei) {  // OPEN has 18 decimals; wei arrive as decimal strings
  const v = BigInt(wei || "0");
  const whole = v / 10n ** 18n;
  const frac = (v % 10n ** 18n).toString().padStart(18, "0").slice(0, 6).replace(/0+$/, "");
  return `${whole}${frac ? "." + frac : ""} OPEN`;
}

async function api(path, options = {}) {
  const key = localStorage.getItem(KEY);
  const res = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}`, ...(options.headers || {}) },
  });
  if (res.status === 401) { signOut(); throw new Error("the API key was refused"); }
  if (!options.stream) {
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    return body;
  }
  return res;
}

function table(headers, rows) {
  if (!rows.length) return el("p", { class: "dim", text: "nothing yet" });
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c })))))));
}

function splitBar(split) {
  const parts = Object.entries(split).map(([k, v]) => [k, BigInt(v)]).filter(([, v]) => v > 0n);
  const total = parts.reduce((a, [, v]) => a + v, 0n);
  const bar = el("div", { class: "splitbar" });
  const legend = el("div", { class: "legend" });
  for (const [party, v] of parts) {
    const pct = total ? Number((v * 10000n) / total) / 100 : 0;
    bar.append(el("div", { style: `width:${pct}%;background:${COLORS[party] || "#888"}`, title: `${party} ${pct}%` }));
    legend.append(el("span", { "data-party": party }, el("i", { style: `background:${COLORS[party] || "#888"}` }), `${party} ${open(v.toString())} (${pct}%)`));
  }
  return el("div", { class: "split" }, bar, legend);
}

// -- sign in and routing ----------------------------------------------------------------

function signOut() { localStorage.removeItem(KEY); route(); }

async function signIn(event) {
  event.preventDefault();
  localStorage.setItem(KEY, $("api-key").value.trim());
  try { await api("/v1/loranet/me"); location.hash = "#/chat"; route(); }
  catch (e) { localStorage.removeItem(KEY); $("signin-error").textContent = e.message; }
}

async function route() {
  const key = localStorage.getItem(KEY);
  const [, page, arg] = (location.hash || "#/chat").split("/");
  for (const s of document.querySelectorAll(".page")) s.hidden = true;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  $("signout").hidden = !key;
  if (!key) { $("who").textContent = ""; $("signin").hidden = false; return; }
  api("/v1/loranet/me").then((me) => { $("who").textContent = `${me.name} · ${short(me.address, 12)}`; }).catch(() => {});
  if (page === "explorer") { $("explorer").hidden = false; await explorer(); }
  else if (page === "jobs" && arg) { $("job").hidden = false; await jobPage(arg); }
  else { $("chat").hidden = false; await chatPage(); }
}

// -- chat -------------------------------------------------------------------------------

async function chatPage() {
  if (state.models.length) return;
  const models = await api("/v1/models");
  state.models = models.data.map((m) => m.id);
  const select = $("model");
  select.replaceChildren(...state.models.map((id) => el("option", { value: id, text: id })));
  const adapter = state.models.find((m) => m.includes(":"));
  if (adapter) select.value = adapter;
}

function receiptView(ext, job) {
  const v = ext.verdict || {};
  const r = ext.receipt || {};
  const box = el("div", { class: "receipt" });
  box.append(el("dl", {},
    el("dt", { text: "node" }), el("dd", { text: ext.node_id || "-" }),
    el("dt", { text: "verifier" }), el("dd", { text: `${v.verifier_id || "-"}${v.audited ? " (audited)" : ""}` }),
    el("dt", { text: "fee" }), el("dd", { text: open(r.fee) }),
    el("dt", { text: "epoch" }), el("dd", { text: r.epoch ?? "-" }),
    el("dt", { text: "transaction" }), el("dd", { class: "tx", text: r.tx_hash || "-" }),
    el("dt", { text: "job" }), el("dd", {}, el("a", { href: `#/jobs/${ext.job_id}`, text: ext.job_id }))));
  if (job) box.append(splitBar(job.split));
  if (job && job.contributors.length) {
    const att = v.attribution;
    box.append(el("div", { class: "contributors" },
      el("strong", { text: att && att.contributors.length
        ? `data contributors, by this answer's attribution (${att.matched_tokens} of ${att.output_tokens} tokens reproduce their records)`
        : "data contributors, by the adapter's fixed weights (the answer reproduces none of their records)" }),
      table(["contributor", "paid"], job.contributors.map((c) => [el("span", { class: "mono", text: c.address }), open(c.amount)]))));
  }
  if (job && job.confidential) box.append(el("div", { text: "confidential: the prompt was sealed to the node and the verifier committee" }));
  return box;
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("prompt").value = "";
  $("send").disabled = true;
  state.messages.push({ role: "user", content: text });
  $("messages").append(el("div", { class: "msg user", text }));
  const badge = el("span", { class: "badge pending", text: "waiting" });
  const body = el("span", { class: "text" });
  const notice = el("div", { class: "notice" });
  const bubble = el("div", { class: "msg assistant" }, badge, body, notice);
  $("messages").append(bubble);
  let answer = "";
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST", stream: true,
      body: JSON.stringify({
        model: $("model").value, messages: state.messages, stream: true, max_tokens: 96,
        confidential: $("confidential").checked, verified_only: $("verified-only").checked,
      }),
    });
    if (!res.ok) { const b = await res.json(); throw new Error(b.error ? b.error.message : res.statusText); }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!frame.startsWith("data: ")) continue;  // progress comments
        const data = frame.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          badge.className = "badge rejected"; badge.textContent = chunk.error.code === "result_rejected" ? "rejected" : "failed";
          notice.textContent = chunk.error.message;
          continue;
        }
        const ext = chunk.loranet || {};
        const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta || {} : {};
        if (ext.event === "withdrawn") {
          answer = ""; notice.textContent = `a result failed verification (${ext.reason}); the job runs again on another node`;
        } else if (delta.content) {
          answer += delta.content;
        }
        if (ext.provisional) { badge.className = "badge provisional"; badge.textContent = `provisional · ${ext.node_id}`; }
        body.classList.toggle("provisional", !!ext.provisional);
        body.textContent = answer;
        if (ext.verified) {
          const job = await api(`/v1/loranet/jobs/${ext.job_id}`).catch(() => null);
          if (job) { answer = job.output; body.textContent = answer; }
          const ok = ext.verdict && ext.verdict.accepted;
          badge.className = `badge ${ok ? "verified" : "rejected"}`;
          badge.textContent = ok ? "verified" : "rejected";
          body.classList.remove("provisional");
          bubble.append(receiptView(ext, job));
        }
      }
    }
    state.messages.push({ role: "assistant", content: answer });
  } catch (e) {
    badge.className = "badge rejected"; badge.textContent = "error"; notice.textContent = e.message;
    state.messages.pop();
  } finally {
    $("send").disabled = false;
  }
}

// -- charts (inline SVG) ------------------------------------------------------------------

function lineChart(points, key) {
  const w = 400, h = 140, pad = 24;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  if (!points.length) { svg.innerHTML = `<text x="10" y="70" fill="#8b98a5">no data yet</text>`; return svg; }
  const xs = points.map((p) => p.at), ys = points.map((p) => p[key]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1, y1 = Math.max(...ys, 1e-9);
  const X = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad), Y = (y) => h - pad - (y / y1) * (h - 2 * pad);
  const d = points.map((p, i) => `${i ? "L" : "M"}${X(p.at).toFixed(1)},${Y(p[key]).toFixed(1)}`).join(" ");
  svg.innerHTML = `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#2a3540"/>` +
    `<path d="${d}" fill="none" stroke="#58a6ff" stroke-width="2"/>` +
    points.map((p) => `<circle cx="${X(p.at).toFixed(1)}" cy="${Y(p[key]).toFixed(1)}" r="2.5" fill="#58a6ff"/>`).join("") +
    `<text x="${pad}" y="14" fill="#8b98a5" font-size="11">max ${y1.toFixed(2)}</text>`;
  return svg;
}

// -- explorer -----------------------------------------------------------------------------

async function explorer() {
  const [me, nodes, adapters, jobs, epochs, stats] = await Promise.all([
    api("/v1/loranet/me"), api("/v1/loranet/nodes"), api("/v1/loranet/adapters"), api("/v1/loranet/jobs"),
    api("/v1/loranet/epochs").catch((e) => ({ epochs: [], error: e.message })), api("/v1/loranet/stats"),
  ]);
  $("me").replaceChildren(el("dl", { class: "receipt" },
    el("dt", { text: "name" }), el("dd", { text: me.name }),
    el("dt", { text: "address" }), el("dd", { text: me.address }),
    el("dt", { text: "escrow" }), el("dd", { text: open(me.balance.escrow) }),
    el("dt", { text: "wallet" }), el("dd", { text: open(me.balance.token) })));
  $("chart-tps").replaceChildren(lineChart(stats.network, "tokens_per_s"));
  $("chart-latency").replaceChildren(lineChart(stats.mine, "latency_s"));
  const total = {};
  for (const j of stats.mine) for (const [k, v] of Object.entries(j.split)) total[k] = (BigInt(total[k] || "0") + BigInt(v)).toString();
  $("chart-split").replaceChildren(Object.keys(total).length ? splitBar(total) : el("p", { class: "dim", text: "no settled jobs yet" }));

  const regions = {};
  for (const n of nodes.nodes) (regions[n.region || "(no region declared)"] ||= []).push(n);
  $("nodes").replaceChildren(...Object.entries(regions).map(([region, list]) => el("div", { class: "region" },
    el("h3", { text: `${region} · ${list.length} node${list.length > 1 ? "s" : ""}` }),
    table(["node", "device", "memory free", "stake", "adapters hot", "tokens/s", "slots free", "heartbeat"],
      list.map((n) => [n.node_id, n.device, n.memory_free ? `${(n.memory_free / 2 ** 30).toFixed(1)} GiB` : "-",
        n.stake === null ? "-" : open(n.stake), n.adapters_hot, n.tokens_per_s, `${n.slots_free}/${n.slots_total}`,
        `${n.heartbeat_age_s}s ago`])))));
  $("adapters").replaceChildren(table(["model", "owner", "licence", "rank", "contributors"],
    adapters.adapters.map((a) => [a.model, el("span", { class: "mono", text: short(a.owner, 14) }), a.license, a.rank,
      a.contributors.map((c) => `${c.id} ${c.weight_bps / 100}%`).join(", ")])));
  $("jobs").replaceChildren(table(["job", "status", "created"],
    jobs.jobs.map((j) => [el("a", { href: `#/jobs/${j.job_id}`, class: "mono", text: j.job_id }), j.status,
      new Date(j.created_at * 1000).toLocaleTimeString()])));
  $("epochs").replaceChildren(epochs.error ? el("p", { class: "error", text: epochs.error }) :
    table(["epoch", "jobs", "fees", "block", "transaction", "time"],
      epochs.epochs.map((e) => [e.seq, e.jobs, open(e.total_fees), e.block, el("span", { class: "mono", text: short(e.tx_hash, 18) }),
        new Date(e.at * 1000).toLocaleTimeString()])));
}

async function lookUpBalance(event) {
  event.preventDefault();
  try {
    const b = await api(`/v1/loranet/balance/${encodeURIComponent($("balance-address").value.trim())}`);
    $("balance").replaceChildren(table(["wallet", "escrow", "credit", "stake"], [[open(b.token), open(b.escrow), open(b.credit), open(b.stake)]]));
  } catch (e) { $("balance").replaceChildren(el("p", { class: "error", text: e.message })); }
}

// -- one job --------------------------------------------------------------------------------

async function jobPage(jobId) {
  $("job-id").textContent = jobId;
  try {
    const job = await api(`/v1/loranet/jobs/${encodeURIComponent(jobId)}`);
    const t0 = job.timeline.length ? job.timeline[0].at : 0;
    const items = job.timeline.map((e) => {
      const bad = e.accepted === false || e.stage === "refunded" || e.stage === "rejected";
      const detail = [e.node_id, e.verifier_id, e.audited ? "audited" : "", e.failed_checks && e.failed_checks.length ? `failed: ${e.failed_checks.join(", ")}` : "",
        e.epoch ? `epoch ${e.epoch}` : "", e.tx_hash ? short(e.tx_hash, 18) : "", e.reason || ""].filter(Boolean).join(" · ");
      return el("li", { class: bad ? "bad" : e.stage === "settled" ? "ok" : "" },
        el("strong", { text: e.stage }), ` +${(e.at - t0).toFixed(2)}s `, el("span", { class: "dim", text: detail }));
    });
    $("job-body").replaceChildren(
      el("p", {}, el("span", { class: `badge ${job.status === "settled" ? "verified" : job.status === "refunded" ? "rejected" : "pending"}`, text: job.status }), job.reason || ""),
      el("ul", { class: "timeline" }, ...items),
      el("h2", { text: "Answer" }), el("div", { class: "msg assistant", text: job.output || "(none)" }),
      ...(job.receipt ? [receiptView(job, job)] : []));
  } catch (e) {
    $("job-body").replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

// -- wiring ---------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); } });
$("new-chat").addEventListener("click", () => { state.messages = []; $("messages").replaceChildren(); });
$("balance-form").addEventListener("submit", lookUpBalance);
window.addEventListener("hashchange", route);
route();
