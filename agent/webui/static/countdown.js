// Counts down to data-deadline (Unix seconds) in #countdown (seconds)
// and in every .countdown (hours, minutes, seconds). Without JavaScript
// the page shows the time as it was drawn.
(function () {
  function left(el) {
    return Math.max(0, Math.round((Number(el.dataset.deadline) * 1000 - Date.now()) / 1000));
  }
  var secs = document.getElementById("countdown");
  var long = document.querySelectorAll(".countdown");
  function hms(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + " h " : "") + m + " min " + (s % 60) + " s";
  }
  function tick() {
    if (secs) secs.textContent = String(left(secs));
    long.forEach(function (el) {
      var s = left(el);
      el.textContent = s > 0 ? "another " + hms(s) : "no longer: issue a new one";
    });
    setTimeout(tick, 1000);
  }
  if (secs || long.length) tick();
})();
