// In-page helper for baton's Chromium pages. Evaluated as one expression per
// call (no state is left in the page), so every primitive is a single
// DevTools round trip. It finds an element by a list of fallback selectors,
// waits for it without polling the browser from outside (a MutationObserver,
// plus a slow timer for changes no mutation reveals, such as CSS animations),
// and performs one operation on it.
//
// Called as: (HELPER)(selectors, op, opts[, predicate])
//   selectors: [{kind: "css"|"xpath"|"text", value: "..."}]
//   op: "wait" | "count" | "text" | "attr" | "value" | "point" | "focus" | "select"
//       | "element" (returns the element itself; evaluated by reference)
//       | "until" (waits for opts.cond rather than for an element)
//   opts: {timeout: ms, visible: bool, name: attr name, option: value,
//          cond: {kind: "gone"} | {kind: "count", cmp, n} | {kind: "text", text}
//                | {kind: "js"} (then `predicate` is the condition)}
// Returns {found: false, why?, unmet?} or {found: true, index, ...}.
async (sels, op, opts, predicate) => {
  const timeout = opts.timeout || 0;

  const isVisible = (el) => {
    const s = getComputedStyle(el);
    if (s.visibility === "hidden" || s.display === "none") return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };

  const byText = (t) => {
    const root = document.body || document.documentElement;
    if (!root) return [];
    const out = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT);
    for (let n = walker.currentNode; n; n = walker.nextNode()) {
      if (["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "HEAD"].includes(n.tagName)) continue;
      const txt = n.innerText ?? n.textContent ?? "";
      if (txt.includes(t)) out.push(n);
    }
    // The innermost elements: drop any that contains another match.
    return out.filter((e) => !out.some((o) => o !== e && e.contains(o)));
  };

  // CSS reaches into open shadow roots (web components) when the light
  // DOM has no match.
  const deep = (root, css) => {
    const out = Array.from(root.querySelectorAll(css));
    if (out.length) return out;
    for (const host of root.querySelectorAll("*")) {
      if (host.shadowRoot) {
        const inner = deep(host.shadowRoot, css);
        if (inner.length) return inner;
      }
    }
    return out;
  };

  const all = (s) => {
    if (s.kind === "css") return deep(document, s.value);
    if (s.kind === "xpath") {
      const r = document.evaluate(s.value, document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
      const a = [];
      for (let i = 0; i < r.snapshotLength; i++) {
        const n = r.snapshotItem(i);
        if (n.nodeType === 1) a.push(n);
      }
      return a;
    }
    return byText(s.value);
  };

  // Why the last candidate was not ready, for the timeout message.
  let why = null;

  const find = () => {
    for (let i = 0; i < sels.length; i++) {
      let els;
      try {
        els = all(sels[i]);
      } catch (e) {
        throw new Error("invalid selector `" + sels[i].value + "`: " + e.message);
      }
      if (opts.visible) els = els.filter(isVisible);
      if (els.length) return [i, els];
    }
    return null;
  };

  const compare = (a, cmp, b) =>
    cmp === "==" ? a === b : cmp === "!=" ? a !== b : cmp === "<" ? a < b :
    cmp === "<=" ? a <= b : cmp === ">" ? a > b : a >= b;

  // "until": the condition holds. An element hidden or removed counts as
  // gone; counts include hidden elements, as `count` does.
  const met = () => {
    const c = opts.cond;
    if (c.kind === "js") {
      const v = predicate();
      if (v) return [0, [], null, v];
      why = "is still " + JSON.stringify(v === undefined ? null : v);
      return null;
    }
    const f = find();
    if (c.kind === "gone") {
      if (!f) return [0, [], null, null];
      why = "still matches " + f[1].length + " element(s)";
      return null;
    }
    if (c.kind === "count") {
      const n = f ? f[1].length : 0;
      if (compare(n, c.cmp, c.n)) return [f ? f[0] : 0, [], null, n];
      why = "matches " + n + " element(s), wanted " + c.cmp + " " + c.n;
      return null;
    }
    if (!f) {
      why = "matches nothing";
      return null;
    }
    const t = (f[1][0].innerText ?? f[1][0].textContent ?? "").trim();
    if (t.includes(c.text)) return [f[0], [], null, t];
    why = "has the text " + JSON.stringify(t.length > 80 ? t.slice(0, 80) + "..." : t);
    return null;
  };

  // For actions, the element must also be enabled and, for a click,
  // the topmost element at its centre.
  const ready = () => {
    if (op === "until") return met();
    const f = find();
    if (!f) return null;
    const el = f[1][0];
    if (op === "point" || op === "focus" || op === "select") {
      if (el.disabled) {
        why = "it is disabled";
        return null;
      }
    }
    if (op === "point") {
      el.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
      const r = el.getBoundingClientRect();
      const x = r.left + r.width / 2;
      const y = r.top + r.height / 2;
      // Inside a shadow root, ask the root: the document answers with the
      // shadow host.
      const root = el.getRootNode();
      const hit = (root.elementFromPoint ? root : document).elementFromPoint(x, y);
      if (!hit || !(hit === el || el.contains(hit))) {
        why = "it is covered by " + (hit ? hit.tagName.toLowerCase() + (hit.id ? "#" + hit.id : "") : "nothing");
        return null;
      }
      f.push({ x, y });
    }
    return f;
  };

  let found = ready();
  if (!found && timeout > 0) {
    found = await new Promise((resolve) => {
      let done = false;
      let obs, iv, to;
      const finish = (v) => {
        if (done) return;
        done = true;
        if (obs) obs.disconnect();
        clearInterval(iv);
        clearTimeout(to);
        resolve(v);
      };
      const check = () => {
        let f = null;
        try {
          f = ready();
        } catch (e) {
          finish({ error: e.message });
          return;
        }
        if (f) finish(f);
      };
      obs = new MutationObserver(check);
      obs.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
      iv = setInterval(check, 100);
      to = setTimeout(() => finish(ready()), timeout);
    });
  }
  if (found && found.error) throw new Error(found.error);
  if (!found) return { found: false, why, unmet: op === "until" };

  const [index, els, point, seen] = found;
  const el = els[0];
  switch (op) {
    case "element":
      // The element itself, as a remote object (a frame to enter).
      el.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
      return el;
    case "until":
      return { found: true, index, value: seen };
    case "wait":
      return { found: true, index };
    case "count":
      return { found: true, index, count: els.length };
    case "text":
      return { found: true, index, value: (el.innerText ?? el.textContent ?? "").trim() };
    case "attr":
      return { found: true, index, value: el.getAttribute(opts.name) };
    case "value":
      return { found: true, index, value: "value" in el ? String(el.value) : null };
    case "point":
      return { found: true, index, x: point.x, y: point.y };
    case "focus": {
      // A field that receives a secret is masked in every screenshot.
      if (opts.secret) el.setAttribute("data-baton-secret", "");
      el.focus();
      if ("value" in el) {
        // Clear through the native setter, so frameworks that track the
        // value (React) see the change, then let the typing fill it.
        const proto = Object.getPrototypeOf(el);
        const desc = Object.getOwnPropertyDescriptor(proto, "value");
        if (desc && desc.set) desc.set.call(el, "");
        else el.value = "";
        el.dispatchEvent(new Event("input", { bubbles: true }));
        return { found: true, index, editable: true };
      }
      if (el.isContentEditable) {
        const range = document.createRange();
        range.selectNodeContents(el);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        return { found: true, index, editable: true };
      }
      return { found: true, index, editable: false };
    }
    case "select": {
      if (el.tagName !== "SELECT") return { found: true, index, wrong: "select" };
      const want = opts.option;
      const opt = Array.from(el.options).find((o) => o.value === want || o.label === want || o.text.trim() === want);
      if (!opt) return { found: true, index, missing: true };
      el.value = opt.value;
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
      return { found: true, index };
    }
  }
  throw new Error("unknown operation " + op);
}
