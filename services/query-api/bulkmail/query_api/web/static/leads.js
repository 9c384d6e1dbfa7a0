// The leads page, live: the count, the results and the query's error follow the query as it is
// typed (debounced), with suggestions under the box. Without this script the form still submits.
(function () {
  "use strict";
  var bm = window.bulkmail;
  var form = document.getElementById("search-form");
  var input = document.getElementById("query");
  if (!form || !input || !bm) return;
  var sort = document.getElementById("sort");
  var count = document.getElementById("lead-count");
  var results = document.getElementById("results");
  var errorBox = document.getElementById("query-error");
  var emailButton = document.getElementById("email-button");
  var saveQuery = document.getElementById("save-view-query");
  var list = document.getElementById("suggestions");
  var smartView = form.getAttribute("data-smart-view");

  // Every request gets a number; an answer is shown only if no newer request was made since,
  // so a slow answer for "stat" never overwrites the one for "status:won".
  var latest = 0;

  function params(extra) {
    var p = new URLSearchParams({ query: input.value, sort: sort ? sort.value : "" });
    if (smartView) p.set("smart_view", smartView);
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p;
  }

  async function search() {
    var mine = ++latest;
    form.setAttribute("aria-busy", "true");
    try {
      var data = await bm.fetchJSON("/ui/leads/search?" + params().toString());
      if (mine !== latest) return;
      count.textContent = data.count_text;
      errorBox.innerHTML = data.error_html;
      results.innerHTML = data.results_html;
      if (data.error) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
      emailButton.setAttribute("href", data.email_link);
      if (data.error) emailButton.setAttribute("aria-disabled", "true"); else emailButton.removeAttribute("aria-disabled");
      var url = new URL(window.location.href);
      url.searchParams.set("query", input.value);
      if (sort && sort.value) url.searchParams.set("sort", sort.value); else url.searchParams.delete("sort");
      url.searchParams.delete("page");
      window.history.replaceState(null, "", url.toString());
    } catch (err) {
      if (mine === latest) count.textContent = "Search failed: " + err.message;
    } finally {
      if (mine === latest) form.removeAttribute("aria-busy");
    }
  }

  // -- suggestions ----------------------------------------------------------------------------
  var suggestions = [];
  var active = -1;
  var latestSuggest = 0;

  function closeList() {
    list.classList.add("hidden");
    list.innerHTML = "";
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    suggestions = [];
    active = -1;
  }

  function showList(items) {
    suggestions = items;
    active = -1;
    list.innerHTML = "";
    if (!items.length) { closeList(); return; }
    items.forEach(function (item, i) {
      var li = document.createElement("li");
      li.id = "suggestion-" + i;
      li.setAttribute("role", "option");
      li.className = "suggestion";
      var label = document.createElement("span");
      label.textContent = item.label;
      var kind = document.createElement("span");
      kind.className = "suggestion-kind";
      kind.textContent = item.kind.replace("_", " ");
      li.appendChild(label);
      li.appendChild(kind);
      li.addEventListener("mousedown", function (event) { event.preventDefault(); accept(i); });
      list.appendChild(li);
    });
    list.classList.remove("hidden");
    input.setAttribute("aria-expanded", "true");
  }

  function highlight(i) {
    var items = list.querySelectorAll("[role=option]");
    items.forEach(function (el, j) { el.setAttribute("aria-selected", j === i ? "true" : "false"); });
    active = i;
    if (i >= 0) input.setAttribute("aria-activedescendant", "suggestion-" + i);
  }

  function accept(i) {
    var s = suggestions[i];
    if (!s) return;
    var v = input.value;
    input.value = v.slice(0, s.start) + s.text + v.slice(s.end);
    var caret = s.start + s.text.length;
    input.setSelectionRange(caret, caret);
    closeList();
    input.focus();
    scheduleSearch();
    scheduleSuggest();
  }

  async function fetchSuggestions() {
    var mine = ++latestSuggest;
    var p = new URLSearchParams({ query: input.value, cursor: String(input.selectionStart || 0) });
    try {
      var data = await bm.fetchJSON("/ui/leads/suggest?" + p.toString());
      if (mine !== latestSuggest || document.activeElement !== input) return;
      showList(data.suggestions);
    } catch (err) {
      closeList();
    }
  }

  var scheduleSearch = bm.debounce(search, 250);
  var scheduleSuggest = bm.debounce(fetchSuggestions, 150);

  input.addEventListener("input", function () {
    if (saveQuery) saveQuery.value = input.value;  // "Save this search" saves what is in the box
    scheduleSearch();
    scheduleSuggest();
  });
  input.addEventListener("blur", function () { setTimeout(closeList, 100); });
  input.addEventListener("keydown", function (event) {
    if (!suggestions.length) return;
    if (event.key === "ArrowDown") { event.preventDefault(); highlight((active + 1) % suggestions.length); }
    else if (event.key === "ArrowUp") { event.preventDefault(); highlight(active <= 0 ? suggestions.length - 1 : active - 1); }
    else if ((event.key === "Enter" || event.key === "Tab") && active >= 0) { event.preventDefault(); accept(active); }
    else if (event.key === "Escape") { closeList(); }
  });
  if (sort) sort.addEventListener("change", search);
  form.addEventListener("submit", function (event) { event.preventDefault(); closeList(); search(); });
})();
