// "sending in 3:41": counts down every [data-send-at] (admin.send_countdown).
// Without it the page still shows the time left when it was loaded.
(function () {
  "use strict";
  if (window.subscriptionsCountdown) return; // loaded twice on one page
  window.subscriptionsCountdown = true;

  function clock(seconds) {
    var s = Math.ceil(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    var ss = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + ss : m + ":" + ss;
  }

  function tick() {
    document.querySelectorAll("[data-send-at]").forEach(function (state) {
      var left = (Date.parse(state.dataset.sendAt) - Date.now()) / 1000;
      var time = state.querySelector("time");
      if (!time) return;
      if (left > 0) {
        time.textContent = clock(left);
      } else if (time.textContent !== "now") {
        time.textContent = "now";
        state.firstChild.textContent = "sending ";
      }
    });
  }

  function start() {
    tick();
    setInterval(tick, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
