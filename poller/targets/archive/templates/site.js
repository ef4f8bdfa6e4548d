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

  function writeFilter(status, query, pbx) {
    var params = new URLSearchParams();
    if (status) params.set("status", status);
    if (pbx) params.set("pbx", pbx);
    if (query) params.set("q", query);
    var text = params.toString();
    if (!text && location.hash.indexOf("=") < 0) return;
    try {
      history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
    } catch (error) { /* some browsers refuse it on file:// pages: the filter still works */ }
  }

  function clock(seconds) {
    var hours = Math.floor(seconds / 3600), minutes = Math.floor(seconds % 3600 / 60);
    var secs = seconds % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return hours ? hours + ":" + two(minutes) + ":" + two(secs) : minutes + ":" + two(secs);
  }

  function element(tag, className, text) {
    var made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  // a row of the page's HTML, or one of a later part (a script beside the page): the same
  // fields to filter and sort on, its <tr> made when it is first shown
  function fromRow(row) {
    var values = Array.prototype.map.call(row.cells, function (cell) {
      return cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
    });
    return {el: row, status: row.dataset.status, digits: row.dataset.digits,
            name: row.dataset.name, values: values, anchor: row.id.slice(2),
            pbx: row.dataset.pbx || ""};
  }

  function fromData(data, words) {
    // [key, start, number, name, status, duration, talk, answered by, anchor, mp3,
    //  recording problem, incident, pbx]: CallRow.to_data
    var status = data[4], number = data[2], index = words.statuses.indexOf(status);
    var digitsOf = digits(number);
    return {el: null, data: data, status: status, digits: digitsOf,
            name: data[3].toLowerCase(), anchor: data[8], pbx: data[12] || "",
            values: [String(Date.parse(data[1]) / 1000), digitsOf, String(index < 0 ? 9 : index),
                     String(data[5]), String(data[6]), data[7]]};
  }

  function incidentLabel(data, words) {
    // as CallRow.incident_label: who opened the incident, by the time its key begins with
    if (data[11] === data[0]) return words.incident_opened;
    var epoch = /(?:^|[^\d])(\d{9,10})\.\d+$/.exec(data[11]);
    var offset = /([+-])(\d\d):(\d\d)$/.exec(data[1]);
    if (!epoch || !offset) return words.incident_joined;
    var minutes = (offset[1] === "-" ? -1 : 1) * (Number(offset[2]) * 60 + Number(offset[3]));
    var local = new Date((Number(epoch[1]) + minutes * 60) * 1000).toISOString();
    var when = local.slice(0, 10) === data[1].slice(0, 10) ? local.slice(11, 16)
                                                           : local.slice(0, 10) + " " + local.slice(11, 16);
    return fill(words.incident_of, {when: when});
  }

  function makeRow(item, words) {
    var data = item.data, number = data[2] || words.anonymous, time = data[1].slice(11, 19);
    var row = element("tr");
    row.id = "c-" + item.anchor;
    row.dataset.status = item.status;
    row.dataset.digits = item.digits;
    row.dataset.name = item.name;
    row.dataset.pbx = item.pbx;
    function cell(value, className) {
      var made = element("td", className);
      if (value !== null) made.dataset.v = value;
      row.appendChild(made);
      return made;
    }
    var when = element("time", "", time);
    when.setAttribute("datetime", data[1]);
    cell(item.values[0]).appendChild(when);
    var caller = cell(item.values[1]);
    caller.appendChild(element("span", "num", number));
    if (data[3]) {
      caller.appendChild(document.createTextNode(" "));
      caller.appendChild(element("span", "name", data[3]));
    }
    if (data[11]) {
      caller.appendChild(document.createTextNode(" "));
      var badge = element("span", "incident", incidentLabel(data, words));
      badge.title = words.incident + " " + data[11];
      caller.appendChild(badge);
    }
    cell(item.values[2]).appendChild(element("span", "s s-" + item.status,
                                             words.labels[item.status] || item.status));
    cell(item.values[3], "n").textContent = clock(data[5]);
    cell(item.values[4], "n").textContent = clock(data[6]);
    cell(null).textContent = data[7];
    var recording = cell(null);
    if (data[9]) {
      var play = element("button", "play js-only", words.play);
      play.type = "button";
      play.dataset.src = encodeURIComponent(data[9]);
      play.setAttribute("aria-label", fill(words.play_label, {time: time, number: number}));
      var download = element("a", "", words.download);
      download.href = encodeURIComponent(data[9]);
      recording.appendChild(play);
      recording.appendChild(document.createTextNode(" "));
      recording.appendChild(download);
    } else if (data[10] && !(data[10] === "empty" && item.status !== "answered")) {
      // a call nobody answered has nothing to record: its header-only file is no news
      recording.appendChild(element("span", "problem", words.problems[data[10]] || data[10]));
    }
    var link = element("a", "", words.record);
    link.href = encodeURIComponent(item.anchor) + ".json";
    cell(null).appendChild(link);
    // the PBX column is there when the day's calls came through more than one
    if (document.getElementById("pbx")) cell(null).textContent = item.pbx || words.unnamed_pbx;
    return row;
  }

  function setUpDay(table) {
    var body = table.tBodies[0];
    var items = Array.prototype.map.call(body.rows, fromRow);
    var wordsNode = document.getElementById("row-strings");
    var words = wordsNode ? JSON.parse(wordsNode.textContent) : null;
    (window.archiveParts || []).forEach(function (part) {
      part.forEach(function (data) { items.push(fromData(data, words)); });
    });
    var pager = document.getElementById("pager");
    var view = pager ? Number(pager.dataset.view) : Infinity;
    var status = document.getElementById("status");
    var pbx = document.getElementById("pbx");
    var query = document.getElementById("q");
    var shown = document.getElementById("shown");
    var none = document.getElementById("none");
    var matched = items;
    var first = 0;  // the first of the matching calls on screen

    function matches(item, wanted, number, text) {
      if (wanted && item.status !== wanted) return false;
      // "-" stands for a poller without a name (no source.name starts with it)
      if (pbx && pbx.value && (item.pbx || "-") !== pbx.value) return false;
      if (number) return item.digits.indexOf(number) >= 0;
      return !text || item.name.indexOf(text) >= 0;
    }

    // only a screenful of rows is in the table: a day of 50,000 calls opens at once
    function show() {
      var fragment = document.createDocumentFragment();
      matched.slice(first, first + view).forEach(function (item) {
        if (!item.el) item.el = makeRow(item, words);
        fragment.appendChild(item.el);
      });
      body.textContent = "";
      body.appendChild(fragment);
      if (!pager) return;
      pager.hidden = matched.length <= view;
      document.getElementById("window").textContent = fill(words.window, {
        first: matched.length ? first + 1 : 0, last: Math.min(first + view, matched.length),
        count: matched.length});
      document.getElementById("earlier").disabled = first === 0;
      document.getElementById("later").disabled = first + view >= matched.length;
    }

    function refilter() {
      var text = query.value.trim().toLowerCase();
      var number = digits(text);
      matched = items.filter(function (item) {
        return matches(item, status.value, number, text);
      });
      first = 0;
    }

    function apply() {
      refilter();
      show();
      shown.textContent = fill(strings.shown, {shown: matched.length, total: items.length});
      none.hidden = matched.length > 0;
      writeFilter(status.value, query.value.trim(), pbx ? pbx.value : "");
    }

    function sortBy(header, index) {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      var numeric = header.dataset.type === "num";
      var keyed = items.map(function (item, position) {
        var value = item.values[index];
        return {item: item, value: numeric ? Number(value) : value.toLowerCase(),
                position: position};
      });
      keyed.sort(function (a, b) {
        var order = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
        return (ascending ? order : -order) || a.position - b.position;
      });
      items = keyed.map(function (entry) { return entry.item; });
      refilter();
      show();
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
        cell.removeAttribute("aria-sort");
      });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      shown.textContent = fill(ascending ? strings.sorted_up : strings.sorted_down,
                               {column: header.textContent.trim()});
    }

    // a link to one call (#c-…, from the index) shows the screenful that holds it
    function reveal() {
      if (location.hash.indexOf("#c-") !== 0) return;
      var anchor = decodeURIComponent(location.hash.slice(3));
      var at = -1;
      matched.some(function (item, position) {
        if (item.anchor === anchor) at = position;
        return at >= 0;
      });
      if (at < 0) return;
      if (at < first || at >= first + view) {
        first = Math.floor(at / view) * view;
        show();
      }
      matched[at].el.classList.add("target");
      matched[at].el.scrollIntoView();
    }

    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      var button = header.querySelector("button");
      if (button) button.addEventListener("click", function () { sortBy(header, index); });
    });
    if (pager) {
      document.getElementById("earlier").addEventListener("click", function () {
        first = Math.max(0, first - view);
        show();
      });
      document.getElementById("later").addEventListener("click", function () {
        first += view;
        show();
      });
    }
    var filter = readFilter();
    if (filter.get("status") !== null) status.value = filter.get("status");
    if (filter.get("q") !== null) query.value = filter.get("q");
    if (status.selectedIndex < 0) status.value = "";
    if (pbx) {
      if (filter.get("pbx") !== null) pbx.value = filter.get("pbx");
      if (pbx.selectedIndex < 0) pbx.value = "";
      pbx.addEventListener("change", apply);
    }
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
    window.addEventListener("hashchange", reveal);
    apply();
    reveal();
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
