// Progressive enhancement only: every page reads fine without this file.
"use strict";
(function () {
  // Times: the server renders UTC (<time datetime>); show them in the viewer's time zone, UTC on hover.
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    if (!el.title) el.title = el.textContent;
    el.textContent = fmt.format(d);
  });
  // Copy buttons.
  document.querySelectorAll("button.copybtn[data-copy]").forEach(function (btn) {
    var src = document.getElementById(btn.getAttribute("data-copy"));
    if (!src || !navigator.clipboard) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      navigator.clipboard.writeText(src.textContent).then(function () {
        btn.textContent = "Copied";
        setTimeout(function () { btn.textContent = "Copy"; }, 1500);
      }, function () { btn.textContent = "Copy failed"; });
    });
  });
  // Set-up self-test: can this browser's machine open a connection to the proxy's port?
  var test = document.getElementById("selftest");
  var out = document.getElementById("selftest-result");
  if (test && out && test.getAttribute("data-target")) {
    test.hidden = false;
    test.addEventListener("click", function () {
      out.textContent = "Testing…";
      var ctl = new AbortController();
      var timer = setTimeout(function () { ctl.abort(); }, 5000);
      fetch(test.getAttribute("data-target"), { mode: "cors", cache: "no-store", signal: ctl.signal })
        .then(function (r) {
          out.textContent = r.status === 204 ? "✓ The proxy answered: it is reachable from this machine."
            : "? Something answered on that address, but not the proxy (HTTP " + r.status + ").";
          out.className = r.status === 204 ? "ok" : "bad";
        })
        .catch(function () { out.textContent = "✗ No answer from the proxy: check the address, a firewall or a VPN."; out.className = "bad"; })
        .finally(function () { clearTimeout(timer); });
    });
  }
  // Keyboard: "/" focuses the filter box.
  var q = document.getElementById("q");
  if (q) document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== q && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) {
      e.preventDefault(); q.focus();
    }
  });
})();
