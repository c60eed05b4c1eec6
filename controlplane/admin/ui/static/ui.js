// medmesh status page: fills the page from /ui/api/status and refreshes
// it without reloading; #trace/ID opens a trace as a waterfall read from
// /ui/api/traces/ID. Every value is inserted as text, never as HTML: proxy
// IDs, NACK messages and policy messages come from outside.
"use strict";
(function () {
  const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh")) || 2000;
  const TYPES = ["LDS", "RDS", "CDS", "EDS", "SDS"];
  let paused = false;
  let last = null;       // last status read
  const shown = {};      // section id -> JSON it was drawn from

  // h builds an element: h("td", {class: "x"}, "text", child, ...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  }
  function table(head, rows, cls) {
    return h("table", {class: cls},
      h("thead", {}, h("tr", {}, head.map((c) => h("th", {scope: "col", class: c.num ? "num" : null}, c.t || c)))),
      h("tbody", {}, rows));
  }
  function empty(text) { return h("p", {class: "empty"}, text); }

  // Ages count from the control plane's clock (status.now).
  function age(ts, now) {
    if (!ts) return "never";
    const s = Math.round((Date.parse(now) - Date.parse(ts)) / 1000);
    if (s < 0) return "in " + dur(-s);
    return dur(s) + " ago";
  }
  function dur(s) {
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function until(ts, now) {
    const s = Math.round((Date.parse(ts) - Date.parse(now)) / 1000);
    return s < 0 ? "expired " + dur(-s) + " ago" : "in " + dur(s);
  }
  function short(v) { return v ? String(v).slice(0, 8) : "-"; }
  function ms(us) { return (us / 1000).toFixed(us < 10000 ? 2 : 1) + " ms"; }
  function traceLink(id, st, label) {
    if (!id) return h("span", {class: "muted"}, "-");
    if (!st.traces.query) return h("code", {title: "no trace backend configured (--trace-query-url)"}, id);
    return h("a", {href: "#trace/" + id, "data-key": "trace-" + id, class: "mono"}, label || id);
  }

  // ---- Overview sections ----
  function summary(st) {
    const p = st.proxies;
    const items = [
      ["Serving", p.ready ? h("span", {class: "ok"}, "ready, catalog from " + p.serving) : h("span", {class: "bad"}, "not ready")],
      ["Site", p.site || "single site"],
      ["Services", String(p.services)],
      ["Proxies connected", String((p.proxies || []).length)],
      ["mTLS", p.mtls ? "on (SPIFFE identities)" : h("span", {class: "warn"}, "off: plaintext")],
      ["Registry", p.source.lastError ? h("span", {class: "bad"}, "error " + age(p.source.lastErrorAt, st.now) + ": " + p.source.lastError)
        : (p.source.synced ? h("span", {class: "ok"}, "synced") : h("span", {class: "warn"}, "not synced yet"))],
      ["Traces", st.traces.query ? h("a", {href: st.traces.uiUrl, rel: "noopener"}, "trace backend UI") : "no trace backend configured (--trace-query-url)"],
    ];
    if (p.error) items.push(["Last publish error", h("span", {class: "bad"}, p.error)]);
    if ((p.warnings || []).length) items.push(["Warnings", h("ul", {class: "plain"}, p.warnings.map((w) => h("li", {}, w)))]);
    if ((p.permissive || []).length) items.push(["Permissive (plaintext accepted)", p.permissive.join(", ")]);
    return h("dl", {class: "kv"}, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function peers(st) {
    const list = st.proxies.source.peers || [];
    const head = h("p", {}, "This site: ", h("strong", {}, st.proxies.site || "single site (no peering)"));
    if (!list.length) return [head, empty("No Consul peerings: no other site's services are imported.")];
    return [head, table(["Peer", "Site", "State", "Last heard", "Stale", "Imported", {t: "Instances", num: true}],
      list.map((pe) => {
        const stale = pe.withdrawn ? h("span", {class: "bad"}, "withdrawn (stale since " + age(pe.staleSince, st.now) + ")")
          : pe.staleSince ? h("span", {class: "warn"}, "stale since " + age(pe.staleSince, st.now)) : h("span", {class: "ok"}, "fresh");
        return h("tr", {"data-peer": pe.name},
          h("td", {}, pe.name), h("td", {}, pe.site),
          h("td", {}, h("span", {class: pe.state === "ACTIVE" ? "ok" : "bad"}, pe.state)),
          h("td", {}, age(pe.lastReceive, st.now)), h("td", {}, stale),
          h("td", {}, (pe.imported || []).join(", ") || "-"), h("td", {class: "num"}, String(pe.instances)));
      }))];
  }

  function proxies(st) {
    const list = st.proxies.proxies || [];
    if (!list.length) return empty("No proxy is connected.");
    return table(["Proxy", "Service", "Kind", "ACKed version per type", "Last ACK", "Last NACK", "Change held"],
      list.map((p) => {
        let lastAck = null;
        const types = TYPES.filter((t) => p.types && p.types[t]).map((t) => {
          const ts = p.types[t];
          if (ts.ackedAt && (!lastAck || ts.ackedAt > lastAck)) lastAck = ts.ackedAt;
          const sync = ts.acked === ts.sent ? h("span", {class: "ok"}, "in sync")
            : h("span", {class: "warn"}, "sent " + short(ts.sent) + ", not ACKed");
          return h("li", {"data-type": t}, h("strong", {}, t + " "), h("code", {}, short(ts.acked)), " ", sync);
        });
        const nack = p.lastNack ? h("div", {class: "nack nack-box"},
          "NACK " + typeName(p.lastNack.typeUrl) + " " + short(p.lastNack.version) + " " + age(p.lastNack.at, st.now) +
          " (" + p.nacks + " in all): " + p.lastNack.message) : h("span", {class: "muted"}, "none");
        return h("tr", {"data-proxy": p.id, class: p.lastNack ? "row-nack" : null},
          h("th", {scope: "row"}, h("code", {}, p.id), p.identity ? h("div", {class: "muted"}, p.identity) : null,
            (p.problems || []).map((pr) => h("div", {class: "bad"}, pr))),
          h("td", {}, p.service), h("td", {}, p.kind + " / " + p.transport),
          h("td", {}, types.length ? h("ul", {class: "plain"}, types) : h("span", {class: "muted"}, "nothing sent yet")),
          h("td", {"data-col": "last-ack"}, age(lastAck, st.now)), h("td", {"data-col": "nack"}, nack),
          h("td", {}, traceLink(p.traceId, st, short(p.traceId))));
      }));
  }
  function typeName(url) {
    const m = {Listener: "LDS", RouteConfiguration: "RDS", Cluster: "CDS", ClusterLoadAssignment: "EDS", Secret: "SDS"};
    const last = String(url).split(".").pop();
    return m[last] || last;
  }

  function changes(st) {
    if (!st.changes.length) return empty("No configuration change since the control plane started.");
    return table(["When", "Trigger", {t: "Proxies pushed", num: true}, {t: "Publish took", num: true}, "Outcome", "Trace"],
      st.changes.map((c) => h("tr", {"data-change": c.traceId || c.at, class: c.error ? "row-nack" : null},
        h("td", {}, h("time", {datetime: c.at}, age(c.at, st.now))),
        h("td", {}, (c.trigger || []).join(", ") + (c.rebuilt ? " (mesh rebuilt)" : "")),
        h("td", {class: "num", title: (c.pushed || []).join(", ")}, String((c.pushed || []).length) +
          (c.rebuilt && !(c.pushed || []).length ? " (no per-proxy change: endpoints at most)" : "")),
        h("td", {class: "num"}, c.durationMs.toFixed(1) + " ms"),
        h("td", {}, c.error ? h("span", {class: "bad"}, c.error) : h("span", {class: "ok"}, "published")),
        h("td", {}, c.traceId ? traceLink(c.traceId, st, "Open waterfall") : h("span", {class: "muted"}, "not traced")))));
  }

  function services(st) {
    if (!st.services.length) return empty("The catalog lists no services.");
    const cls = {passing: "ok", warning: "warn", critical: "bad"};
    return table(["Service", "Kind", "Protocol", "PHI", "Instances (health)"], st.services.map((s) =>
      h("tr", {"data-service": s.name},
        h("th", {scope: "row"}, s.name, s.namespace && s.namespace !== "default" ? h("span", {class: "muted"}, " (" + s.namespace + ")") : null),
        h("td", {}, s.kind), h("td", {}, s.protocol), h("td", {}, s.phi ? "yes" : "no"),
        h("td", {}, s.instances.length ? h("ul", {class: "plain"}, s.instances.map((i) => h("li", {},
          h("code", {}, i.id), " " + i.address + ":" + i.port + " ", h("span", {class: cls[i.health] || ""}, i.health),
          i.peer ? " via peer " + i.peer : "", i.site ? " (site " + i.site + ")" : ""))) : empty("no instances")))));
  }

  function identities(st) {
    if (!st.identities.length) return empty(st.proxies.mtls ? "No proxy holds or asked for an identity." : "mTLS is off: no SVIDs are issued.");
    return table(["Proxy", "Identity", "SVID expires", "Issued"], st.identities.map((i) => {
      let exp = h("span", {class: "muted"}, "-");
      if (i.notAfter) {
        const left = Date.parse(i.notAfter) - Date.parse(st.now), life = Date.parse(i.notAfter) - Date.parse(i.issuedAt);
        exp = h("span", {class: left <= 0 ? "bad" : left < life * 0.1 ? "warn" : null},
          h("time", {datetime: i.notAfter}, i.notAfter.replace(/\.\d+/, "")), " (" + until(i.notAfter, st.now) + ")");
      }
      return h("tr", {"data-identity": i.proxy},
        h("th", {scope: "row"}, h("code", {}, i.proxy)),
        h("td", {class: i.identity.startsWith("spiffe://") ? null : "warn"}, i.identity),
        h("td", {}, exp), h("td", {}, i.issuedAt ? age(i.issuedAt, st.now) : "-"));
    }));
  }

  function policies(st) {
    const pr = st.policies, out = [];
    out.push(h("p", {}, pr.source ? "Source: " + pr.source + (pr.resolved ? "" : " (not resolved yet)") : "No policy source configured."));
    if ((pr.errors || []).length) out.push(h("ul", {class: "plain bad"}, pr.errors.map((e) => h("li", {}, e))));
    if (!pr.objects.length) { out.push(empty("No policy objects.")); return out; }
    out.push(table(["Object", "Service", "Conditions", "Source"], pr.objects.map((o) => {
      const acc = (o.conditions || []).find((c) => c.type === "Accepted");
      const ok = acc && acc.status === "True";
      return h("tr", {"data-policy": o.kind + "/" + o.namespace + "/" + o.name, class: ok ? null : "row-nack"},
        h("th", {scope: "row"}, o.kind + " " + o.namespace + "/" + o.name),
        h("td", {}, o.service || "-"),
        h("td", {}, (o.conditions || []).length ? h("ul", {class: "plain"}, o.conditions.map((c) => h("li", {},
          h("span", {class: (c.type === "Accepted") === (c.status === "True") ? "ok" : "bad"}, c.type + "=" + c.status),
          " " + c.reason + (c.message ? ": " + c.message : ""), h("span", {class: "muted"}, " (" + age(c.lastTransitionTime, st.now) + ")"))))
          : h("span", {class: "bad"}, "not resolved")),
        h("td", {class: "muted"}, o.source || "-"));
    })));
    return out;
  }

  function residency(st) {
    const r = st.residency;
    if (!r.site && !r.decisions.length) return empty("Single site: nothing crosses sites, so there are no residency decisions.");
    const out = [h("p", {}, "Policy: ", h("code", {}, r.policy.name || "default"), " ", h("span", {class: "muted"}, short(r.policy.digest)),
      " (" + r.policy.evaluations + " evaluations, " + r.policy.failures + " failures)")];
    if (r.policy.lastError) out.push(h("p", {class: "nack-box nack"}, "Refused edit " + age(r.policy.lastErrorAt, st.now) + ": " + r.policy.lastError));
    if ((r.conditions || []).length) out.push(h("ul", {class: "plain bad"}, r.conditions.map((c) => h("li", {}, c.service + ": " + c.message))));
    if (!r.decisions.length) { out.push(empty("No other site's services are known here.")); return out; }
    out.push(table(["Service", "At site", "PHI", "Routed here", {t: "Instances", num: true}, "Refused callers"], r.decisions.map((d) =>
      h("tr", {"data-residency": d.service + "@" + d.site},
        h("th", {scope: "row"}, d.service), h("td", {}, d.site), h("td", {}, d.phi ? "yes" : "no"),
        h("td", {}, d.routed ? h("span", {class: "ok"}, "routed") : h("span", {class: "bad"}, "not routed")),
        h("td", {class: "num"}, String(d.instances)),
        h("td", {}, (d.denied || []).map((x) => x.source + ((x.reasons || []).length ? " (" + x.reasons.join("; ") + ")" : "")).join(", ") || "-")))));
    return out;
  }

  const SECTIONS = {
    summary: [summary, (st) => [st.proxies.ready, st.proxies.serving, st.proxies.site, st.proxies.services, (st.proxies.proxies || []).length,
      st.proxies.mtls, st.proxies.source, st.proxies.error, st.proxies.warnings, st.proxies.permissive, st.traces]],
    peers: [peers, (st) => [st.now, st.proxies.site, st.proxies.source.peers]],
    proxies: [proxies, (st) => [st.now, st.proxies.proxies, st.traces]],
    changes: [changes, (st) => [st.now, st.changes, st.traces]],
    services: [services, (st) => st.services],
    identities: [identities, (st) => [st.now, st.identities, st.proxies.mtls]],
    policies: [policies, (st) => [st.now, st.policies]],
    residency: [residency, (st) => [st.now, st.residency]],
  };

  // draw redraws only the sections whose data changed, and gives focus
  // back to the element that had it, so a keyboard user is not thrown
  // to the top of the page every refresh.
  function draw(st) {
    const active = document.activeElement;
    const key = active && active.closest && active.closest("section") ? active.getAttribute("data-key") || active.getAttribute("href") : null;
    for (const [id, [render, deps]] of Object.entries(SECTIONS)) {
      const sig = JSON.stringify(deps(st));
      if (shown[id] === sig) continue;
      shown[id] = sig;
      const body = document.querySelector("#" + id + " .body");
      body.replaceChildren(...[render(st)].flat());
    }
    if (key && !document.contains(active)) {
      const again = document.querySelector('[data-key="' + CSS.escape(key) + '"], section a[href="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  async function getJSON(url) {
    const resp = await fetch(url, {headers: {Accept: "application/json"}, cache: "no-store"});
    if (!resp.ok) throw new Error((await resp.text()).trim() || resp.status + " " + resp.statusText);
    return resp.json();
  }

  async function refresh() {
    if (paused) return;
    try {
      last = await getJSON("/ui/api/status");
      draw(last);
      document.getElementById("updated").textContent = "Updated " + new Date(last.now).toLocaleTimeString() +
        " (every " + REFRESH_MS / 1000 + " s)";
      document.body.dataset.loaded = "true";
      announce("");
    } catch (e) {
      const msg = "Cannot read the control plane: " + e.message;
      document.getElementById("updated").textContent = msg +
        (last ? " (showing what it said at " + new Date(last.now).toLocaleTimeString() + ")" : "");
      announce(msg);
    }
    const id = traceIDFromHash();
    if (id) loadTrace(id, false);
  }

  // announce tells screen readers when the page loses (or regains) the
  // control plane, once, not at every refresh.
  let announced = "";
  function announce(msg) {
    if (msg === announced) return;
    announced = msg;
    document.getElementById("problem").textContent = msg || (last ? "Reading the control plane again." : "");
  }

  // ---- Trace waterfall ----
  function traceIDFromHash() {
    const m = /^#trace\/([0-9a-fA-F]{16,32})$/.exec(location.hash);
    return m ? m[1].toLowerCase() : null;
  }
  let traceShown = "";
  async function loadTrace(id, focus) {
    const box = document.querySelector("#trace .body");
    const title = document.getElementById("h-trace");
    title.textContent = "Trace " + id;
    if (focus) { box.replaceChildren(h("p", {}, "Reading the trace from the trace backend\u2026")); traceShown = ""; title.focus(); }
    let wf;
    try {
      wf = await getJSON("/ui/api/traces/" + id);
    } catch (e) {
      box.replaceChildren(h("p", {class: "nack-box nack", role: "alert"}, e.message));
      traceShown = "";
      return;
    }
    if (traceIDFromHash() !== id) return;
    const sig = JSON.stringify(wf);
    if (sig === traceShown) return;
    traceShown = sig;
    box.replaceChildren(...waterfall(wf));
    document.body.dataset.trace = id;
  }

  function waterfall(wf) {
    const total = Math.max(wf.durationUs, 1);
    // Pushes are spans of their own, or events on one summary span
    // beyond the control plane's per-proxy span limit.
    const pushes = wf.spans.filter((s) => s.proxy).concat(wf.spans.flatMap((s) => (s.events || []).filter((e) => e.proxy)));
    const nacks = pushes.filter((s) => s.outcome === "nack" || s.nack);
    const out = [h("dl", {class: "kv"},
      h("dt", {}, "Started"), h("dd", {}, h("time", {datetime: wf.start}, new Date(wf.start).toLocaleString())),
      h("dt", {}, "Duration"), h("dd", {}, ms(wf.durationUs)),
      h("dt", {}, "Spans"), h("dd", {}, String(wf.spans.length) + (pushes.length ? " (" + pushes.length + " proxy pushes, " + nacks.length + " NACKed)" : "")),
      h("dt", {}, "Services"), h("dd", {}, wf.services.join(", ")),
      wf.uiUrl ? [h("dt", {}, "Trace backend"), h("dd", {}, h("a", {href: wf.uiUrl, rel: "noopener"}, "Open in the trace backend's UI"))] : null)];
    if (pushes.length) out.push(h("p", {class: "muted"}, "The change's own steps first, then every proxy's push until its ACK or NACK, slowest first."));
    out.push(table(["Span", "Service", {t: "Starts at", num: true}, {t: "Took", num: true}, "Timeline", "Outcome"], wf.spans.map((s) => {
      const left = (s.offsetUs / total) * 100, width = Math.max((s.durationUs / total) * 100, 0.3);
      const bad = s.error || s.outcome === "nack";
      const outcome = s.nack ? h("span", {class: "nack"}, (s.outcome || "error").toUpperCase() + ": " + s.nack)
        : s.outcome ? h("span", {class: s.outcome === "ack" ? "ok" : "warn"}, s.outcome.toUpperCase())
          : s.error ? h("span", {class: "bad"}, "error") : h("span", {class: "muted"}, "ok");
      return h("tr", {class: bad ? "error row-nack" : null, "data-span": s.name, "data-proxy": s.proxy || null, "data-outcome": s.outcome || null},
        h("td", {class: "name", style: null},
          h("span", {"aria-hidden": "true"}, "\u00a0\u00a0".repeat(s.depth)), s.name,
          s.proxy ? [" \u2192 ", h("code", {}, s.proxy)] : null,
          s.detail ? h("div", {class: "muted mono"}, s.detail) : null,
          (s.events || []).length ? h("ul", {class: "events"}, s.events.map((e) => h("li", {"data-proxy": e.proxy || null, "data-outcome": e.outcome || null},
            "+" + ms(e.offsetUs - s.offsetUs) + " " + e.name,
            e.proxy ? [" \u2192 ", h("code", {}, e.proxy)] : null,
            e.outcome ? [" ", h("span", {class: e.outcome === "ack" ? "ok" : e.nack || e.outcome === "nack" ? "nack" : "warn"},
              e.outcome.toUpperCase() + (e.nack ? ": " + e.nack : ""))] : null,
            e.detail ? " " + e.detail : ""))) : null),
        h("td", {}, s.service + (s.kind ? " (" + s.kind + ")" : "")),
        h("td", {class: "num"}, ms(s.offsetUs)), h("td", {class: "num"}, ms(s.durationUs)),
        h("td", {class: "bar"}, bar(left, width, s, total)),
        h("td", {}, outcome));
    }), "wf"));
    return out;
  }
  function bar(left, width, s, total) {
    const track = h("div", {class: "track", role: "img", "aria-label": "from " + ms(s.offsetUs) + " for " + ms(s.durationUs)});
    const span = h("div", {class: "span"});
    // Positions through the CSSOM: the page's CSP allows no inline styles.
    span.style.left = left.toFixed(3) + "%";
    span.style.width = Math.min(width, 100 - left).toFixed(3) + "%";
    track.append(span);
    for (const e of s.events || []) {
      const m = h("div", {class: "ev"});
      m.style.left = ((e.offsetUs / total) * 100).toFixed(3) + "%";
      track.append(m);
    }
    return track;
  }

  // route shows the overview or a trace. Leaving a trace gives focus
  // back to what opened it (a change's link, the look-up field), so a
  // keyboard user continues where they were.
  let opener = null;
  function route() {
    const id = traceIDFromHash();
    const wasTrace = !document.getElementById("trace").hidden;
    const a = document.activeElement;
    if (id && a && a !== document.body && !a.closest("#trace")) {
      opener = a.getAttribute("data-key") ? '[data-key="' + CSS.escape(a.getAttribute("data-key")) + '"]' : a.id ? "#" + CSS.escape(a.id) : null;
    }
    document.getElementById("overview").hidden = !!id;
    document.getElementById("trace").hidden = !id;
    if (id) { loadTrace(id, true); return; }
    traceShown = "";
    if (wasTrace) {
      const back = opener && document.querySelector(opener);
      focusAfterKey(back || document.getElementById("main"));
      opener = null;
    }
  }

  // focusAfterKey moves focus once the key that led here is released:
  // Enter on the back link navigates on keydown, and its keypress must
  // not land in the look-up field focus returns to (it would submit the
  // form and open the trace again).
  let keyHeld = false, pendingFocus = null;
  document.addEventListener("keydown", () => { keyHeld = true; }, true);
  document.addEventListener("keyup", () => {
    keyHeld = false;
    if (pendingFocus) { pendingFocus.focus(); pendingFocus = null; }
  }, true);
  window.addEventListener("blur", () => { keyHeld = false; });
  function focusAfterKey(el) {
    if (keyHeld) pendingFocus = el;
    else el.focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("trace-lookup").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = document.getElementById("trace-id").value.trim().toLowerCase();
      if (!/^[0-9a-f]{16,32}$/.test(v)) {
        document.getElementById("updated").textContent = "A trace ID is 16 or 32 hexadecimal digits.";
        return;
      }
      location.hash = "#trace/" + v;
    });
    const pause = document.getElementById("pause");
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume refresh" : "Pause refresh";
      if (!paused) refresh();
    });
    window.addEventListener("hashchange", route);
    // /ui?trace=ID (a link from elsewhere, or the form sent without
    // this script's handler) opens that trace.
    const asked = new URLSearchParams(location.search).get("trace");
    if (asked && /^[0-9a-fA-F]{16,32}$/.test(asked) && !location.hash) location.hash = "#trace/" + asked.toLowerCase();
    route();
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
