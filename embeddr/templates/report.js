/* embeddr review viewer. Data only ever reaches the page through textContent and setAttribute. */
(function () {
  "use strict";
  var root = document.documentElement;
  function fail(msg) { root.setAttribute("data-check", "error:" + msg); }
  window.addEventListener("error", function (ev) { fail(String(ev.message || "script error")); });

  var meta = JSON.parse(document.getElementById("meta").textContent);
  var selftest = location.hash === "#selftest";
  var storeKey = "embeddr-verdicts:" + meta.db + ":" + meta.model;
  var pages = {};
  var current = 0;
  var marks = loadMarks(); // group key -> {paths: [...], whole: bool, members: [path, ...]}

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.setAttribute("class", cls);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function pad4(n) { var s = String(n); while (s.length < 4) s = "0" + s; return s; }
  function num(x) { return x === null || x === undefined ? "?" : Number(x).toFixed(3); }
  function groupKey(g) { return JSON.stringify(g.members.map(function (m) { return m.path; }).sort()); }
  function basename(p) { var i = p.lastIndexOf("/"); var j = p.lastIndexOf("\\"); return p.slice(Math.max(i, j) + 1); }
  function dirname(p) { var i = Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")); return i > 0 ? p.slice(0, i) : ""; }

  // -- marks and verdicts ------------------------------------------------------------------------
  function loadMarks() {
    if (selftest) return {};
    try { var raw = window.localStorage.getItem(storeKey); return raw ? JSON.parse(raw) || {} : {}; }
    catch (e) { return {}; }
  }
  function saveMarks() {
    if (selftest) return;
    try { window.localStorage.setItem(storeKey, JSON.stringify(marks)); } catch (e) { /* private mode: marks live until the tab closes */ }
  }
  function entry(g) {
    var key = groupKey(g);
    if (!marks[key]) marks[key] = { paths: g.members.map(function (m) { return m.path; }).sort(), whole: false, members: [] };
    return marks[key];
  }
  function tidy(key) {
    var e = marks[key];
    if (e && !e.whole && e.members.length === 0) delete marks[key];
  }
  function verdictPairs() {
    var seen = {}, out = [];
    function add(a, b) {
      if (a === b) return;
      var x = a < b ? a : b, y = a < b ? b : a, k = JSON.stringify([x, y]);
      if (seen[k]) return;
      seen[k] = true;
      out.push({ a: x, b: y, verdict: "not_duplicate" });
    }
    Object.keys(marks).forEach(function (key) {
      var e = marks[key];
      if (e.whole) e.paths.forEach(function (a, i) { e.paths.slice(i + 1).forEach(function (b) { add(a, b); }); });
      e.members.forEach(function (m) { e.paths.forEach(function (o) { add(m, o); }); });
    });
    out.sort(function (p, q) { return p.a < q.a ? -1 : p.a > q.a ? 1 : p.b < q.b ? -1 : p.b > q.b ? 1 : 0; });
    return out;
  }
  function exportObject() {
    return { db: meta.db, catalog_id: meta.catalog_id, model: meta.model, threshold: meta.threshold, exported: new Date().toISOString(), verdicts: verdictPairs() };
  }
  function updateCounts() {
    var groups = 0, members = 0;
    Object.keys(marks).forEach(function (k) { if (marks[k].whole) groups += 1; members += marks[k].members.length; });
    var n = verdictPairs().length;
    document.getElementById("marks").textContent = (groups || members)
      ? groups + " group(s) and " + members + " single copy(ies) marked: " + n + " not-duplicate pair(s)"
      : "no marks";
    document.getElementById("download").disabled = n === 0;
  }
  function download() {
    var blob = new Blob([JSON.stringify(exportObject(), null, 1)], { type: "application/json" });
    var url = URL.createObjectURL(blob);
    var a = el("a");
    a.setAttribute("href", url);
    a.setAttribute("download", "verdicts.json");
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  // -- rendering -----------------------------------------------------------------------------------
  var ROLE_LABEL = { canonical: "KEEP", protected: "PROTECTED", duplicate: "duplicate", member: "member" };

  function renderMember(g, m, card) {
    var fig = el("figure", "member " + m.role);
    var box;
    if (m.thumb) {
      box = el("a", "thumb");
      if (m.uri) box.setAttribute("href", m.uri);
      box.setAttribute("target", "_blank");
      box.setAttribute("rel", "noopener noreferrer");
      box.setAttribute("title", m.path);
      var img = el("img");
      img.setAttribute("loading", selftest ? "eager" : "lazy");
      img.setAttribute("decoding", "async");
      img.setAttribute("alt", basename(m.rel));
      img.setAttribute("src", m.thumb);
      box.appendChild(img);
    } else {
      box = el("div", "thumb");
      box.appendChild(el("span", "nothumb", "no preview: " + (m.thumb_error || "unknown reason")));
    }
    fig.appendChild(box);
    fig.appendChild(el("span", "badge", ROLE_LABEL[m.role] || m.role));
    var cap = el("figcaption");
    cap.appendChild(el("div", "name", basename(m.rel)));
    var folder = dirname(m.rel);
    if (folder) cap.appendChild(el("div", "folder path", folder));
    if (m.item_id !== null && m.item_id !== undefined) cap.appendChild(el("div", "itemid", "id " + m.item_id));
    var facts = [m.size_h, (m.width && m.height) ? m.width + "\u00d7" + m.height : "? \u00d7 ?", m.format];
    if (m.score !== null && m.score !== undefined) facts.push("score " + num(m.score));
    cap.appendChild(el("div", "facts", facts.join(" \u00b7 ")));
    var label = el("label");
    var box2 = el("input");
    box2.setAttribute("type", "checkbox");
    box2.setAttribute("data-path", m.path);
    var key = groupKey(g);
    box2.checked = !!(marks[key] && marks[key].members.indexOf(m.path) >= 0);
    if (box2.checked) fig.classList.add("rejected");
    box2.addEventListener("change", function () {
      var e = entry(g), i = e.members.indexOf(m.path);
      if (box2.checked && i < 0) e.members.push(m.path);
      if (!box2.checked && i >= 0) e.members.splice(i, 1);
      fig.classList.toggle("rejected", box2.checked);
      tidy(key); saveMarks(); updateCounts();
    });
    label.appendChild(box2);
    label.appendChild(document.createTextNode(" not a duplicate"));
    cap.appendChild(label);
    fig.appendChild(cap);
    return fig;
  }

  function renderGroup(g) {
    var key = groupKey(g);
    var card = el("article", "group");
    card.setAttribute("data-group", String(g.id));
    var head = el("div", "group-head");
    head.appendChild(el("span", "gid", "group " + g.id));
    head.appendChild(el("span", "", "min score " + num(g.min_score) + " \u00b7 max " + num(g.max_score)));
    head.appendChild(el("span", "", g.members.length + " files"));
    var label = el("label");
    var box = el("input");
    box.setAttribute("type", "checkbox");
    box.setAttribute("data-group", String(g.id));
    box.checked = !!(marks[key] && marks[key].whole);
    card.classList.toggle("rejected", box.checked);
    box.addEventListener("change", function () {
      entry(g).whole = box.checked;
      card.classList.toggle("rejected", box.checked);
      tidy(key); saveMarks(); updateCounts();
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" not duplicates (whole group)"));
    head.appendChild(label);
    if (g.reason) head.appendChild(el("span", "reason", "kept: " + g.reason));
    card.appendChild(head);
    var row = el("div", "members");
    g.members.forEach(function (m) { row.appendChild(renderMember(g, m, card)); });
    card.appendChild(row);
    return card;
  }

  function renderPager(host) {
    host.textContent = "";
    function btn(text, target, disabled) {
      var b = el("button", "", text);
      b.setAttribute("type", "button");
      b.disabled = disabled;
      b.addEventListener("click", function () { show(target); });
      host.appendChild(b);
    }
    btn("\u00ab first", 1, current <= 1);
    btn("\u2039 prev", current - 1, current <= 1);
    var input = el("input");
    input.setAttribute("type", "number");
    input.setAttribute("min", "1");
    input.setAttribute("max", String(meta.pages));
    input.value = String(current);
    input.addEventListener("change", function () {
      var n = parseInt(input.value, 10);
      if (n >= 1 && n <= meta.pages) show(n); else input.value = String(current);
    });
    host.appendChild(el("span", "", "page"));
    host.appendChild(input);
    var first = (current - 1) * meta.page_size + 1, last = Math.min(current * meta.page_size, meta.groups);
    host.appendChild(el("span", "muted", "of " + meta.pages + " (groups " + (meta.groups ? first : 0) + "\u2013" + last + " of " + meta.groups + ")"));
    btn("next \u203a", current + 1, current >= meta.pages);
    btn("last \u00bb", meta.pages, current >= meta.pages);
  }

  function render(n, done) {
    var host = document.getElementById("groups");
    host.textContent = "";
    var groups = pages[n] || [];
    if (!groups.length) host.appendChild(el("p", "muted", "No duplicate groups at this threshold."));
    groups.forEach(function (g) { host.appendChild(renderGroup(g)); });
    renderPager(document.getElementById("pager-top"));
    renderPager(document.getElementById("pager-bottom"));
    updateCounts();
    if (done) done();
  }

  function show(n, done) {
    n = Math.max(1, Math.min(meta.pages, n));
    current = n;
    if (!selftest) { try { history.replaceState(null, "", "#page=" + n); } catch (e) { /* file:// in some browsers */ } }
    if (pages[n]) { render(n, done); window.scrollTo(0, 0); return; }
    var errBox = document.getElementById("load-error");
    var s = document.createElement("script");
    s.src = "pages/" + pad4(n) + ".js";
    s.onload = function () { errBox.hidden = true; if (current === n) render(n, done); };
    s.onerror = function () {
      errBox.hidden = false;
      errBox.textContent = "Could not load " + s.src + ": keep index.html, pages/ and thumbs/ together.";
      fail("cannot load page " + n);
    };
    document.head.appendChild(s);
  }

  window.EMBEDDR = {
    page: function (n, groups) { pages[n] = groups; },
    verdicts: exportObject
  };

  // -- self-check (scripts/check_report_html.py): thumbnails loaded, export works, paging works ---
  function imagesSettled(callback) {
    var imgs = Array.prototype.slice.call(document.querySelectorAll("#groups img"));
    var left = imgs.length;
    function one() { left -= 1; if (left === 0) finish(); }
    function finish() {
      var broken = imgs.filter(function (i) { return !(i.naturalWidth > 0); });
      callback(imgs.length - broken.length, imgs.length, broken.map(function (i) { return i.getAttribute("src"); }));
    }
    if (!left) { finish(); return; }
    imgs.forEach(function (i) {
      if (i.complete) one();
      else { i.addEventListener("load", one); i.addEventListener("error", one); }
    });
  }

  function afterFirst() {
    if (!selftest) return;
    imagesSettled(function (loaded, total, broken) {
      if (broken.length) { fail(broken.length + " of " + total + " thumbnails did not load, e.g. " + broken[0]); return; }
      var missing = document.querySelectorAll("#groups .nothumb").length;
      var g = pages[current] || [];
      if (g.length) document.querySelector('#groups input[data-group="' + g[0].id + '"]').click();
      if (g.length > 1) {
        var other = g[1].members.filter(function (m) { return m.role !== "canonical"; })[0] || g[1].members[0];
        var boxes = document.querySelectorAll('#groups article[data-group="' + g[1].id + '"] input[data-path]');
        Array.prototype.forEach.call(boxes, function (b) { if (b.getAttribute("data-path") === other.path) b.click(); });
      }
      var out = document.getElementById("selftest-verdicts");
      out.textContent = JSON.stringify(exportObject());
      var result = "ok:" + loaded + "/" + total + " thumbnails loaded, " + missing + " without preview";
      if (meta.pages > 1) {
        show(2, function () {
          var n = document.querySelectorAll("#groups article.group").length;
          if (!n) { fail("page 2 rendered no groups"); return; }
          root.setAttribute("data-check", result + ", page 2 has " + n + " groups");
        });
      } else {
        root.setAttribute("data-check", result);
      }
    });
  }

  document.getElementById("download").addEventListener("click", download);
  document.getElementById("clear").addEventListener("click", function () {
    if (!window.confirm("Forget every mark in this report?")) return;
    marks = {}; saveMarks(); render(current);
  });

  var m = /^#page=(\d+)$/.exec(location.hash);
  show(m ? parseInt(m[1], 10) : 1, afterFirst);
})();
