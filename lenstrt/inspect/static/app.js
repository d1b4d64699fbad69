/* lenstrt inspect: grade lens candidates from the keyboard. Plain JavaScript, no framework, no network.
   data/index.js (loaded before this file) sets window.LENSTRT_INSPECT_INDEX: ids, scores and spreads of
   every candidate. The rest of each candidate (member scores, ra/dec) is in data/chunk-NNNNNN.js, loaded
   with a <script> tag when first shown (browsers refuse fetch() of file:// URLs). Grades live in
   localStorage; when the page is served by `lenstrt inspect --serve` (http:) each grade is also POSTed to
   the server, which writes SERVE_OUT/grades.csv. */
(function () {
  "use strict";
  var IDX = window.LENSTRT_INSPECT_INDEX;
  if (!IDX) {
    document.getElementById("title").textContent = "data/index.js is missing: rebuild with `lenstrt inspect`";
    return;
  }
  var N = IDX.n, CHUNK = IDX.chunk, GRADES = IDX.grades;
  var PREFIX = "lenstrt-inspect:" + IDX.key + ":";
  var SERVED = location.protocol === "http:" || location.protocol === "https:";
  var $ = function (id) { return document.getElementById(id); };

  // -- storage (localStorage; a memory fallback where the browser refuses it) ----------------------------
  var memory = {};
  function getItem(k) {
    try { return window.localStorage.getItem(k); } catch (e) { return memory[k] === undefined ? null : memory[k]; }
  }
  function setItem(k, v) {
    try { window.localStorage.setItem(k, v); } catch (e) {
      memory[k] = v;
      status("This browser refuses local storage: export your grades before closing the tab.", true);
    }
  }
  function getJSON(k, dflt) {
    try { var v = getItem(k); return v ? JSON.parse(v) : dflt; } catch (e) { return dflt; }
  }

  var grades = getJSON(PREFIX + "grades", {});      // id -> {g: 1..4, t: ISO time}
  var outbox = getJSON(PREFIX + "outbox", []);      // grades not yet accepted by the server (--serve)
  var rankOf = Object.create(null);
  IDX.ids.forEach(function (id, i) { rankOf[id] = i; });
  var chunks = Object.create(null), pending = Object.create(null);
  var view = [], cur = [];                          // all ranks shown (sorted, filtered); this page's ranks
  var st = Object.assign({sort: "score-desc", minScore: "", maxScore: "", minStd: "", maxStd: "", show: "all",
                          perPage: 100, page: 0, focusRank: 0}, getJSON(PREFIX + "view", {}));
  var focusPos = 0;

  function saveGrades() { setItem(PREFIX + "grades", JSON.stringify(grades)); }
  function saveView() { setItem(PREFIX + "view", JSON.stringify(st)); }
  function grader() { return ($("grader").value || "").trim() || "anonymous"; }
  function status(msg, isError) {
    var s = $("saving");
    s.textContent = msg;
    s.className = isError ? "error" : "";
  }
  function announce(msg) { $("announce").textContent = msg; }
  function fmt(x, d) { return x === null || x === undefined ? "n/a" : Number(x).toFixed(d); }
  function pad(k) { return ("000000" + k).slice(-6); }

  // -- data chunks, loaded on demand -----------------------------------------------------------------------
  window.LENSTRT_INSPECT_CHUNK = function (k, rows) {
    chunks[k] = rows;
    var cbs = pending[k] || [];
    delete pending[k];
    cbs.forEach(function (cb) { cb(); });
  };
  function withChunk(k, cb) {
    if (chunks[k]) { cb(); return; }
    if (pending[k]) { pending[k].push(cb); return; }
    pending[k] = [cb];
    var s = document.createElement("script");
    s.src = "data/chunk-" + pad(k) + ".js";
    s.onerror = function () { status("data/chunk-" + pad(k) + ".js is missing: rebuild the page", true); };
    document.head.appendChild(s);
  }
  function detail(rank) {
    var c = chunks[Math.floor(rank / CHUNK)];
    return c ? c[rank % CHUNK] : null;
  }

  // -- view: filter, sort, page ------------------------------------------------------------------------------
  function num(v) { return v === "" || v === null || v === undefined || isNaN(Number(v)) ? null : Number(v); }
  function computeView() {
    var lo = num(st.minScore), hi = num(st.maxScore), slo = num(st.minStd), shi = num(st.maxStd);
    var out = [];
    for (var i = 0; i < N; i++) {
      var s = IDX.score[i], d = IDX.std[i], g = grades[IDX.ids[i]];
      if (lo !== null && !(s >= lo)) continue;
      if (hi !== null && !(s <= hi)) continue;
      if (slo !== null && !(d >= slo)) continue;
      if (shi !== null && !(d <= shi)) continue;
      if (st.show === "ungraded" && g) continue;
      if (st.show === "graded" && !g) continue;
      if (/^[1-4]$/.test(st.show) && !(g && String(g.g) === st.show)) continue;
      out.push(i);
    }
    var key = st.sort.split("-"), col = key[0] === "std" ? IDX.std : IDX.score, sign = key[1] === "asc" ? 1 : -1;
    out.sort(function (a, b) {
      var x = col[a] === null ? -Infinity : col[a], y = col[b] === null ? -Infinity : col[b];
      return x === y ? a - b : sign * (x - y);
    });
    view = out;
  }
  function pages() { return Math.max(1, Math.ceil(view.length / st.perPage)); }

  function tileLabel(rank) {
    var g = grades[IDX.ids[rank]];
    return IDX.ids[rank] + ", score " + fmt(IDX.score[rank], 3) + ", spread " + fmt(IDX.std[rank], 3) +
      (g ? ", graded " + g.g + " " + GRADES[g.g] : ", not graded");
  }
  function paintGrade(li) {
    var rank = Number(li.dataset.rank), g = grades[IDX.ids[rank]];
    li.className = "tile" + (g ? " g" + g.g : "");
    li.querySelector(".grade").textContent = g ? g.g + " " + GRADES[g.g] : "";
    li.setAttribute("aria-label", tileLabel(rank));
  }
  function paintDetail(li) {
    var rank = Number(li.dataset.rank), d = detail(rank);
    if (!d) return;
    var m = IDX.members.map(function (name, j) { return name + " " + fmt(d.m[j], 3); }).join(" \u00b7 ");
    li.querySelector(".members").textContent = m;
    if (IDX.has_radec) li.querySelector(".pos").textContent = "ra " + fmt(d.ra, 5) + " dec " + fmt(d.dec, 5);
    li.title = d.source + " row " + d.index + (d.flags ? " (flags " + d.flags + ")" : "");
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function render(focusRank) {
    var total = pages();
    st.page = Math.min(Math.max(0, st.page), total - 1);
    cur = view.slice(st.page * st.perPage, (st.page + 1) * st.perPage);
    var grid = $("grid");
    grid.textContent = "";
    cur.forEach(function (rank) {
      var li = el("li", "tile");
      li.dataset.rank = rank;
      li.tabIndex = -1;
      var img = el("img");
      img.src = "tiles/" + pad(rank) + ".png";
      img.alt = "colour composite of " + IDX.ids[rank];
      img.width = img.height = 128;
      li.appendChild(img);
      li.appendChild(el("span", "grade"));
      var meta = el("div", "meta");
      meta.appendChild(el("div", "id", IDX.ids[rank]));
      meta.appendChild(el("div", "score", "p = " + fmt(IDX.score[rank], 4) + " \u00b1 " + fmt(IDX.std[rank], 4)));
      meta.appendChild(el("div", "members"));
      if (IDX.has_radec) meta.appendChild(el("div", "pos"));
      li.appendChild(meta);
      li.addEventListener("click", function () { focusAt(cur.indexOf(rank)); });
      paintGrade(li);
      grid.appendChild(li);
      withChunk(Math.floor(rank / CHUNK), function () { paintDetail(li); });
    });
    $("empty").hidden = view.length > 0;
    $("page-info").textContent = "page " + (st.page + 1) + " of " + total + " (" + view.length + " shown)";
    $("prev").disabled = st.page === 0;
    $("next").disabled = st.page >= total - 1;
    var pos = focusRank === undefined ? -1 : cur.indexOf(focusRank);
    focusAt(pos < 0 ? 0 : pos, true);
    stats();
    saveView();
  }
  function tiles() { return $("grid").children; }
  function focusAt(pos, quiet) {
    var t = tiles();
    if (!t.length) return;
    pos = Math.min(Math.max(0, pos), t.length - 1);
    if (t[focusPos]) t[focusPos].tabIndex = -1;
    focusPos = pos;
    t[pos].tabIndex = 0;
    if (!quiet || document.activeElement === document.body || (document.activeElement && document.activeElement.classList.contains("tile"))) {
      t[pos].focus();
    }
    st.focusRank = cur[pos];
    saveView();
  }
  function columns() {
    var cols = getComputedStyle($("grid")).gridTemplateColumns.split(" ").filter(Boolean).length;
    return Math.max(1, cols);
  }
  function move(delta) {
    var pos = focusPos + delta;
    if (pos >= cur.length && st.page < pages() - 1) { st.page++; render(); focusAt(0); return; }
    if (pos < 0 && st.page > 0) { st.page--; render(); focusAt(cur.length - 1); return; }
    focusAt(pos);
  }
  function goPage(delta) {
    var p = st.page + delta;
    if (p < 0 || p >= pages()) return;
    st.page = p;
    render();
    focusAt(0);
  }
  function stats() {
    var n = 0;
    for (var id in grades) if (id in rankOf) n++;
    $("stats").textContent = N + " candidates (score \u2265 " + IDX.min_score + ", top " + (IDX.top || "all") + ") from " +
      IDX.serve_out + "; " + n + " graded" + (SERVED ? "; saved to the server's grades.csv" : "");
  }

  // -- grading -------------------------------------------------------------------------------------------------
  function grade(g) {
    var li = tiles()[focusPos];
    if (!li) return;
    var rank = Number(li.dataset.rank), id = IDX.ids[rank], t = new Date().toISOString();
    if (g) grades[id] = {g: g, t: t}; else delete grades[id];
    saveGrades();
    paintGrade(li);
    stats();
    announce(g ? id + ": " + g + " " + GRADES[g] : id + ": grade cleared");
    if (SERVED) { outbox.push({id: id, grade: g, grader: grader(), time: t}); flush(); }
    if (g && $("grid").children.length) move(1);
  }
  var flushing = false;
  function flush() {
    setItem(PREFIX + "outbox", JSON.stringify(outbox));
    if (!SERVED || flushing || !outbox.length) return;
    flushing = true;
    var batch = outbox.slice();
    fetch("grades", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(batch)})
      .then(function (r) { return r.json().then(function (j) { return {ok: r.ok, j: j}; }); })
      .then(function (res) {
        flushing = false;
        if (!res.ok) throw new Error(res.j.error || "refused");
        outbox = outbox.slice(batch.length);
        setItem(PREFIX + "outbox", JSON.stringify(outbox));
        status("saved to " + res.j.file);
        if (outbox.length) flush();
      })
      .catch(function (e) {
        flushing = false;
        status("not saved to the server (" + e.message + "); kept in this browser, retried with the next grade", true);
      });
  }
  function pullServerGrades() {
    fetch("grades").then(function (r) { return r.json(); }).then(function (j) {
      var me = grader(), changed = false;
      (j.grades || []).forEach(function (row) {
        if (row.grader !== me || !(row.id in rankOf)) return;
        var mine = grades[row.id];
        if (!mine || String(row.time) > String(mine.t)) { grades[row.id] = {g: Number(row.grade), t: row.time}; changed = true; }
      });
      if (changed) { saveGrades(); Array.prototype.forEach.call(tiles(), paintGrade); stats(); }
    }).catch(function () { status("the server did not answer: grades are kept in this browser", true); });
  }

  function csvField(v) {
    v = String(v);
    return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  /* The CSV export: `id,grade,grader,time`, one row per graded candidate, in rank order. */
  function exportCSV() {
    var who = grader();
    var ids = Object.keys(grades).sort(function (a, b) {
      var ra = a in rankOf ? rankOf[a] : Infinity, rb = b in rankOf ? rankOf[b] : Infinity;
      return ra === rb ? (a < b ? -1 : 1) : ra - rb;
    });
    var lines = ["id,grade,grader,time"];
    ids.forEach(function (id) { lines.push([id, grades[id].g, who, grades[id].t].map(csvField).join(",")); });
    return lines.join("\n") + "\n";
  }
  function download() {
    var blob = new Blob([exportCSV()], {type: "text/csv"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "grades-" + grader().replace(/[^\w.-]+/g, "_") + "-" + new Date().toISOString().slice(0, 10) + ".csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // -- wiring --------------------------------------------------------------------------------------------------
  function bindControl(id, key, isNumber) {
    var e = $(id);
    e.value = st[key];
    e.addEventListener("change", function () {
      st[key] = isNumber ? Number(e.value) : e.value;
      st.page = 0;
      computeView();
      render();
    });
  }
  bindControl("sort", "sort");
  bindControl("min-score", "minScore");
  bindControl("max-score", "maxScore");
  bindControl("min-std", "minStd");
  bindControl("max-std", "maxStd");
  bindControl("show", "show");
  bindControl("per-page", "perPage", true);
  $("grader").value = getItem("lenstrt-inspect:grader") || "";
  $("grader").addEventListener("change", function () { setItem("lenstrt-inspect:grader", $("grader").value.trim()); });
  $("export").addEventListener("click", download);
  $("prev").addEventListener("click", function () { goPage(-1); });
  $("next").addEventListener("click", function () { goPage(1); });
  document.addEventListener("keydown", function (e) {
    var t = e.target, tag = t && t.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || (t && t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key;
    if (k >= "1" && k <= "4" && k.length === 1) grade(Number(k));
    else if (k === "0" || k === "Backspace" || k === "Delete") grade(0);
    else if (k === "ArrowRight") move(1);
    else if (k === "ArrowLeft") move(-1);
    else if (k === "ArrowDown") move(columns());
    else if (k === "ArrowUp") move(-columns());
    else if (k === "PageDown") goPage(1);
    else if (k === "PageUp") goPage(-1);
    else if (k === "Home") focusAt(0);
    else if (k === "End") focusAt(cur.length - 1);
    else return;
    e.preventDefault();
  });

  document.title = IDX.title;
  $("title").textContent = IDX.title;
  if (SERVED) $("served-note").textContent = " and written to " + IDX.serve_out + "/grades.csv by the server";
  window.LenstrtInspect = {exportCSV: exportCSV, grades: function () { return JSON.parse(JSON.stringify(grades)); },
                           served: SERVED, flush: flush, outbox: function () { return outbox.slice(); }};
  computeView();
  var start = st.focusRank, at = view.indexOf(start);
  if (at >= 0) st.page = Math.floor(at / st.perPage);
  render(start);
  if (tiles().length) tiles()[focusPos].focus();
  if (SERVED) { pullServerGrades(); flush(); }
})();
