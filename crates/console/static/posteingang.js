// kurzdraht console: the Posteingang updates itself. Every few seconds it asks the node for
// rows of messages that arrived after the newest one shown and puts them on top; a status
// line (aria-live) tells screen reader users. Without script the page works as it is and
// shows new messages when reloaded.
(function () {
  "use strict";
  var table = document.getElementById("posteingang");
  var status = document.getElementById("posteingang-status");
  if (!table || !status) { return; }
  var body = table.querySelector("tbody");
  var every = 5000;
  function poll() {
    var after = table.getAttribute("data-newest-seq") || "0";
    var kind = table.getAttribute("data-kind") || "";
    var url = "/posteingang/neu?nach=" + encodeURIComponent(after) +
      (kind ? "&art=" + encodeURIComponent(kind) : "");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 204) { return null; }
        if (!r.ok) { throw new Error("status " + r.status); }
        return r.text().then(function (html) {
          return { html: html, newest: r.headers.get("x-newest-seq"), count: r.headers.get("x-count") };
        });
      })
      .then(function (update) {
        if (update && update.html) {
          var empty = document.getElementById("posteingang-leer");
          if (empty) { empty.remove(); }
          body.insertAdjacentHTML("afterbegin", update.html);
          if (update.newest) { table.setAttribute("data-newest-seq", update.newest); }
          var n = parseInt(update.count || "0", 10);
          status.textContent = n === 1 ? "1 neue Nachricht eingegangen." : n + " neue Nachrichten eingegangen.";
        }
      })
      .catch(function () { /* try again at the next turn */ })
      .then(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
})();
