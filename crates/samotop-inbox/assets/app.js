// Samotop inbox: the list, search, a message view and live updates. No framework, no build.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const state = { mailbox: null, query: "", items: [], selected: -1, open: null, known: new Set(), tab: "html", remote: false };

  function parseLocation() {
    const path = location.pathname;
    const m = path.match(/^\/inbox\/(.+)$/);
    state.mailbox = m ? decodeURIComponent(m[1]) : null;
    const params = new URLSearchParams(location.search);
    state.query = params.get("q") || "";
    return params.get("id");
  }

  function listUrl() {
    const q = state.query ? "&query=" + enc(state.query) : "";
    if (state.mailbox) return "/api/v1/inbox/" + enc(state.mailbox) + "?limit=200" + q;
    return state.query ? "/api/v1/search?limit=200" + q : "/api/v1/messages?limit=200";
  }

  function messageBase(id) {
    return state.mailbox ? "/api/v1/inbox/" + enc(state.mailbox) + "/message/" + enc(id) : "/api/v1/message/" + enc(id);
  }

  async function getJson(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    return r.json();
  }

  function addresses(list) {
    return (list || []).map((a) => (a.Name ? a.Name + " <" + a.Address + ">" : a.Address)).join(", ");
  }

  function when(iso) {
    const d = new Date(iso);
    const now = new Date();
    return d.toDateString() === now.toDateString() ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString();
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function loadList() {
    let page;
    try {
      page = await getJson(listUrl());
    } catch (e) {
      $("count").textContent = "cannot load: " + e.message;
      return;
    }
    const first = state.known.size === 0;
    const list = $("list");
    list.replaceChildren();
    state.items = page.messages || [];
    state.items.forEach((m, i) => {
      const li = el("li");
      li.dataset.id = m.ID;
      if (!m.Read) li.classList.add("unread");
      if (!first && !state.known.has(m.ID)) li.classList.add("fresh");
      if (state.open === m.ID) {
        li.classList.add("selected");
        state.selected = i;
      }
      const from = m.From && (m.From.Name || m.From.Address);
      li.append(el("span", "from", from || "(no sender)"), el("span", "when", when(m.Created)));
      const subj = el("span", "subj", m.Subject || (m.Parsed ? "(no subject)" : "(not parsed: see Raw)"));
      if (m.Attachments > 0) subj.classList.add("clip");
      li.append(subj, el("span", "snip", m.Snippet || ""));
      li.addEventListener("click", () => select(i, true));
      list.append(li);
    });
    state.known = new Set(state.items.map((m) => m.ID));
    $("empty").hidden = state.items.length > 0;
    const n = page.messages_count;
    $("count").textContent = n + (n === 1 ? " message" : " messages") + (page.unread ? ", " + page.unread + " unread" : "");
    $("scope").textContent = state.mailbox ? state.mailbox : "All mail";
    document.title = (page.unread ? "(" + page.unread + ") " : "") + (state.mailbox || "Samotop inbox");
  }

  function select(i, open) {
    if (i < 0 || i >= state.items.length) return;
    state.selected = i;
    [...$("list").children].forEach((li, j) => li.classList.toggle("selected", j === i));
    const li = $("list").children[i];
    if (li) li.scrollIntoView({ block: "nearest" });
    if (open) openMessage(state.items[i].ID, true);
  }

  function setTab(name) {
    state.tab = name;
    document.querySelectorAll(".tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.tab === name)));
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === "tab-" + name));
  }

  async function openMessage(id, push) {
    let m;
    try {
      m = await getJson(messageBase(id));
    } catch (e) {
      return;
    }
    state.open = m.ID;
    state.remote = false;
    if (push) {
      const params = new URLSearchParams(location.search);
      params.set("id", m.ID);
      history.pushState(null, "", location.pathname + "?" + params.toString());
    }
    $("message").hidden = false;
    document.querySelector(".panes").classList.add("reading");
    $("m-subject").textContent = m.Subject || "(no subject)";
    $("m-from").textContent = addresses([m.From]);
    $("m-to").textContent = addresses(m.To);
    $("m-cc").textContent = addresses(m.Cc);
    $("m-cc").hidden = $("m-cc-label").hidden = !(m.Cc && m.Cc.length);
    $("m-date").textContent = new Date(m.Date).toLocaleString();
    $("m-size").textContent = (m.Size / 1024).toFixed(1) + " KiB";
    const atts = $("m-attachments");
    atts.replaceChildren();
    (m.Attachments || []).forEach((a) => {
      const link = el("a", null, (a.FileName || "part " + a.PartID) + " (" + Math.ceil(a.Size / 1024) + " KiB)");
      link.href = messageBase(m.ID) + "/part/" + enc(a.PartID);
      link.setAttribute("download", a.FileName || "part");
      const li = el("li");
      li.append(link);
      atts.append(li);
    });
    $("tab-text").textContent = m.Text || "";
    $("m-html").src = messageBase(m.ID) + "/html";
    document.querySelector(".remote-note").hidden = !m.HTML;
    $("tab-envelope").textContent = JSON.stringify(m.Envelope, null, 2);
    const raw = await fetch(messageBase(m.ID) + "/raw", { credentials: "same-origin" }).then((r) => r.text()).catch(() => "");
    $("tab-raw").textContent = raw;
    const end = raw.search(/\r?\n\r?\n/);
    $("tab-headers").textContent = end >= 0 ? raw.slice(0, end) : raw;
    setTab(m.HTML ? "html" : "text");
    [...$("list").children].forEach((li) => {
      if (li.dataset.id === m.ID) li.classList.remove("unread");
    });
  }

  function closeMessage() {
    state.open = null;
    $("message").hidden = true;
    $("m-html").src = "about:blank";
    document.querySelector(".panes").classList.remove("reading");
    const params = new URLSearchParams(location.search);
    params.delete("id");
    const qs = params.toString();
    history.pushState(null, "", location.pathname + (qs ? "?" + qs : ""));
    $("list").focus();
  }

  async function deleteOpen() {
    if (!state.open) return;
    const id = state.open;
    if (state.mailbox) {
      await fetch(messageBase(id), { method: "DELETE", credentials: "same-origin" });
    } else {
      await fetch("/api/v1/messages", { method: "DELETE", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ IDs: [id] }) });
    }
    const next = state.selected;
    closeMessage();
    await loadList();
    if (state.items.length) select(Math.min(next, state.items.length - 1), false);
  }

  async function deleteAll() {
    if (!confirm("Delete every message listed?")) return;
    if (state.mailbox) {
      await fetch("/api/v1/inbox/" + enc(state.mailbox) + (state.query ? "?query=" + enc(state.query) : ""), { method: "DELETE", credentials: "same-origin" });
    } else if (state.query) {
      await fetch("/api/v1/search?query=" + enc(state.query), { method: "DELETE", credentials: "same-origin" });
    } else {
      await fetch("/api/v1/messages", { method: "DELETE", credentials: "same-origin" });
    }
    closeMessage();
    loadList();
  }

  let reloadTimer = null;
  function scheduleReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadList, 150);
  }

  function live() {
    const source = new EventSource("/api/v1/events");
    source.addEventListener("open", () => $("live").classList.add("on"));
    source.addEventListener("error", () => $("live").classList.remove("on"));
    source.addEventListener("new", scheduleReload);
    source.addEventListener("changed", scheduleReload);
  }

  function go(path) {
    history.pushState(null, "", path);
    state.known = new Set();
    const id = parseLocation();
    $("search").value = state.query;
    loadList();
    if (id) openMessage(id, false);
    else if (state.open) closeMessage();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const id = parseLocation();
    $("search").value = state.query;
    $("address").value = state.mailbox || "";
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = $("search").value.trim();
      go(location.pathname + (q ? "?q=" + enc(q) : ""));
    });
    $("open-inbox").addEventListener("submit", (e) => {
      e.preventDefault();
      const a = $("address").value.trim();
      go(a ? "/inbox/" + enc(a) : "/");
    });
    $("home").addEventListener("click", (e) => {
      e.preventDefault();
      $("address").value = "";
      go("/");
    });
    $("back").addEventListener("click", closeMessage);
    $("delete").addEventListener("click", deleteOpen);
    $("delete-all").addEventListener("click", deleteAll);
    $("load-remote").addEventListener("click", () => {
      if (!state.open) return;
      state.remote = true;
      $("m-html").src = messageBase(state.open) + "/html?remote=1";
      document.querySelector(".remote-note").hidden = true;
    });
    document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => setTab(b.dataset.tab)));
    window.addEventListener("popstate", () => {
      const id = parseLocation();
      $("search").value = state.query;
      loadList();
      if (id) openMessage(id, false);
      else {
        state.open = null;
        $("message").hidden = true;
        document.querySelector(".panes").classList.remove("reading");
      }
    });
    document.addEventListener("keydown", (e) => {
      const typing = e.target instanceof HTMLInputElement;
      if (typing) {
        if (e.key === "Escape") e.target.blur();
        return;
      }
      if (e.key === "/") { e.preventDefault(); $("search").focus(); }
      else if (e.key === "j" || e.key === "ArrowDown") { e.preventDefault(); select(Math.min(state.selected + 1, state.items.length - 1), !!state.open); }
      else if (e.key === "k" || e.key === "ArrowUp") { e.preventDefault(); select(Math.max(state.selected - 1, 0), !!state.open); }
      else if (e.key === "Enter" || e.key === "o") { if (state.selected >= 0) select(state.selected, true); }
      else if (e.key === "Delete" || e.key === "#") { deleteOpen(); }
      else if (e.key === "Escape") { if (state.open) closeMessage(); }
    });
    loadList().then(() => { if (id) openMessage(id, false); });
    live();
  });
})();
