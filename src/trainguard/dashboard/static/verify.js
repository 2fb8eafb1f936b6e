// Verification page: while a verification runs, poll its status and reload when it ends.
"use strict";
(function () {
  const section = document.getElementById("verification");
  if (!section || section.dataset.running !== "true") {
    return;
  }
  function poll() {
    fetch(section.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : null))
      .then((data) => {
        if (data && !data.running) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(() => window.setTimeout(poll, 5000));
  }
  window.setTimeout(poll, 1000);
})();
