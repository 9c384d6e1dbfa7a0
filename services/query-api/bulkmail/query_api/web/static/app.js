// bulkmail's small helpers for the pages (no framework, no build step). Loaded with `defer` on
// every page; page scripts use window.bulkmail.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  class HTTPError extends Error {
    constructor(status, data) {
      super((data && (data.detail || data.error)) || "Request failed with status " + status);
      this.status = status;
      this.data = data;
    }
  }

  // fetch() for the /ui/ JSON endpoints: sends the CSRF header, `options.json` as a JSON body,
  // resolves to the parsed JSON (or null), rejects with HTTPError (.status, .data) otherwise.
  // A 401 means the session ended: go to the sign-in page and come back here after.
  async function fetchJSON(url, options) {
    var opts = Object.assign({ credentials: "same-origin" }, options || {});
    var headers = new Headers(opts.headers || {});
    headers.set("Accept", "application/json");
    headers.set("X-CSRF-Token", csrfToken());
    if (opts.json !== undefined) {
      headers.set("Content-Type", "application/json");
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    opts.headers = headers;
    var response = await fetch(url, opts);
    if (response.status === 401) {
      window.location.assign("/signin?next=" + encodeURIComponent(window.location.pathname + window.location.search));
    }
    var text = await response.text();
    var data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = text; }
    }
    if (!response.ok) throw new HTTPError(response.status, data);
    return data;
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      var args = arguments, self = this;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(self, args); }, ms);
    };
  }

  // <form data-confirm="Really?"> or <button data-confirm="..."> asks before submitting
  // (no inline onclick: the Content-Security-Policy forbids inline script).
  document.addEventListener("submit", function (event) {
    var message = (event.submitter && event.submitter.getAttribute("data-confirm")) ||
      event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // <button data-copy="#input-id"> copies that field's value.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    if (!field) return;
    field.select();
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  // On a phone the top navigation scrolls sideways: show the current page's entry.
  function showCurrentNavEntry() {
    var nav = document.querySelector(".mainnav");
    var current = nav && nav.querySelector('[aria-current="page"]');
    if (current && nav.scrollWidth > nav.clientWidth) {
      nav.scrollLeft = current.offsetLeft - nav.offsetLeft - (nav.clientWidth - current.offsetWidth) / 2;
    }
  }
  document.addEventListener("DOMContentLoaded", showCurrentNavEntry);
  window.addEventListener("resize", debounce(showCurrentNavEntry, 100));

  window.bulkmail = { fetchJSON: fetchJSON, csrfToken: csrfToken, debounce: debounce, HTTPError: HTTPError };
})();
