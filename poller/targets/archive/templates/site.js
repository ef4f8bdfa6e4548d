// Filters, sorting and players of the archive pages: plain JS, no network, works from file://.
(function () {
  "use strict";
  var strings = JSON.parse(document.getElementById("strings").textContent);

  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (_, name) { return values[name]; });
  }

  function digits(text) { return text.replace(/\D+/g, ""); }

  // the filter lives in the address (#status=unanswered&q=916): links from the index land on
  // it, and a reload or a shared link keeps it; a bare #c-… is a row to show, not a filter
  function readFilter() {
    var hash = location.hash.slice(1);
    return hash.indexOf("=") < 0 ? new URLSearchParams() : new URLSearchParams(hash);
  }

  function writeFilter(status, query) {
    var params = new URLSearchParams();
    if (status) params.set("status", status);
    if (query) params.set("q", query);
    var text = params.toString();
    if (!text && location.hash.indexOf("=") < 0) return;
    try {
      history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
    } catch (error) { /* some browsers refuse it on file:// pages: the filter still works */ }
  }

  function setUpDay(table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var status = document.getElementById("status");
    var query = document.getElementById("q");
    var shown = document.getElementById("shown");
    var none = document.getElementById("none");

    function matches(row, wanted, number, text) {
      if (wanted && row.dataset.status !== wanted) return false;
      if (number) return row.dataset.digits.indexOf(number) >= 0;
      return !text || row.dataset.name.indexOf(text) >= 0;
    }

    function apply() {
      var text = query.value.trim().toLowerCase();
      var count = 0;
      rows.forEach(function (row) {
        var visible = matches(row, status.value, digits(text), text);
        row.hidden = !visible;
        if (visible) count += 1;
      });
      shown.textContent = fill(strings.shown, {shown: count, total: rows.length});
      none.hidden = count > 0;
      writeFilter(status.value, query.value.trim());
    }

    function sortBy(header, index) {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      var numeric = header.dataset.type === "num";
      var keyed = rows.map(function (row, position) {
        var cell = row.cells[index];
        var value = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
        return {row: row, value: numeric ? Number(value) : value.toLowerCase(), position: position};
      });
      keyed.sort(function (a, b) {
        var order = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
        return (ascending ? order : -order) || a.position - b.position;
      });
      var fragment = document.createDocumentFragment();
      rows = keyed.map(function (item) { fragment.appendChild(item.row); return item.row; });
      body.appendChild(fragment);
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
        cell.removeAttribute("aria-sort");
      });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      shown.textContent = fill(ascending ? strings.sorted_up : strings.sorted_down,
                               {column: header.textContent.trim()});
    }

    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      var button = header.querySelector("button");
      if (button) button.addEventListener("click", function () { sortBy(header, index); });
    });
    var filter = readFilter();
    if (filter.get("status") !== null) status.value = filter.get("status");
    if (filter.get("q") !== null) query.value = filter.get("q");
    if (status.selectedIndex < 0) status.value = "";
    status.addEventListener("change", apply);
    query.addEventListener("input", apply);
    document.getElementById("filters").addEventListener("submit", function (event) {
      event.preventDefault();
    });
    // "/" jumps to the search, as on many sites
    document.addEventListener("keydown", function (event) {
      var field = event.target.closest && event.target.closest("input, select, textarea, audio");
      if (event.key === "/" && !field && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        query.focus();
      }
    });
    apply();
  }

  // players are made on demand: a day of a thousand calls must not open a thousand media
  // elements; the button becomes the player, which takes the focus
  function play(button) {
    var audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    audio.src = button.dataset.src;
    audio.setAttribute("aria-label", button.getAttribute("aria-label"));
    button.replaceWith(audio);
    audio.focus();
    var started = audio.play();
    if (started && started.catch) started.catch(function () { /* the controls remain */ });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.play");
    if (button) play(button);
  });
  // one conversation at a time
  document.addEventListener("play", function (event) {
    Array.prototype.forEach.call(document.querySelectorAll("audio"), function (audio) {
      if (audio !== event.target) audio.pause();
    });
  }, true);

  // "called back" ticks on the index, kept in this browser
  function setUpTicks(table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var box = row.querySelector("input.done");
      var name = "poller-called-back:" + row.dataset.key;
      var stored = null;
      try { stored = localStorage.getItem(name); } catch (error) { /* storage off */ }
      box.checked = stored !== null;
      row.classList.toggle("done", box.checked);
      box.addEventListener("change", function () {
        row.classList.toggle("done", box.checked);
        try {
          if (box.checked) localStorage.setItem(name, new Date().toISOString());
          else localStorage.removeItem(name);
        } catch (error) { /* storage off: the tick lasts until the page is left */ }
      });
    });
  }

  var calls = document.getElementById("calls");
  if (calls) setUpDay(calls);
  var waiting = document.getElementById("waiting");
  if (waiting) setUpTicks(waiting);
})();
