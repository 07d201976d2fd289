// Progress bars for installs. The forms work without this script (the
// page comes back when the install is done); with it, the upload and the
// install each show a bar, the install's following its job
// (GET /api/v1/jobs). The JSON API takes the page's session with its
// token in X-Keel-Token.
(function () {
  var token = document.querySelector('meta[name="keel-token"]');
  if (!token) return;
  token = token.content;
  var box = document.getElementById("progress");
  var upBar = document.getElementById("upload-bar");
  var bar = document.getElementById("install-bar");
  var state = document.getElementById("install-state");

  function jobs() {
    return fetch("/api/v1/jobs", { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (j) { return j.jobs || []; });
  }
  // follow shows the newest job not in before until done() says the
  // request answered; then it shows that job's end.
  function follow(before, done) {
    var finished = false, id = null;
    function poll() {
      jobs().then(function (js) {
        var j = null;
        for (var i = 0; i < js.length; i++) {
          if ((id && js[i].id === id) || (!id && before.indexOf(js[i].id) < 0)) { j = js[i]; break; }
        }
        if (j) {
          id = j.id;
          bar.value = j.progress;
          state.textContent = j.state + ": " + j.message;
          state.dataset.state = j.state;
        }
        if (!finished || (j && j.state === "running")) setTimeout(poll, 500);
      }).catch(function () { setTimeout(poll, 1000); });
    }
    poll();
    return function (answerID) { if (answerID) id = answerID; finished = true; };
  }
  function start(run) {
    box.hidden = false;
    upBar.value = 0; bar.value = 0;
    state.textContent = "starting"; state.dataset.state = "running";
    jobs().then(function (js) {
      run(follow(js.map(function (j) { return j.id; })));
    });
  }
  function answered(stop, status, text) {
    var body = {};
    try { body = JSON.parse(text); } catch (e) {}
    stop(body.job);
    if (status >= 300) {
      state.textContent = "refused: " + (body.error || status);
      state.dataset.state = "failed";
    }
  }

  var upload = document.getElementById("upload");
  if (upload) upload.addEventListener("submit", function (ev) {
    var file = document.getElementById("package").files[0];
    if (!file || !window.XMLHttpRequest) return;
    ev.preventDefault();
    start(function (stop) {
      var xhr = new XMLHttpRequest();
      var reboot = document.getElementById("reboot").value;
      xhr.open("POST", "/api/v1/install" + (reboot === "later" ? "?reboot=later" : ""));
      xhr.setRequestHeader("X-Keel-Token", token);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) upBar.value = e.loaded / e.total; };
      xhr.onload = function () { upBar.value = 1; answered(stop, xhr.status, xhr.responseText); };
      xhr.onerror = function () { answered(stop, 599, '{"error":"the connection to the appliance broke"}'); };
      xhr.send(file);
    });
  });

  document.querySelectorAll("form.install-update").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var wait = f.querySelector('input[name="ignore_wait"]');
      var body = JSON.stringify({ name: f.dataset.name, version: f.dataset.version, ignore_wait: !!(wait && wait.checked) });
      start(function (stop) {
        upBar.value = 1;
        fetch("/api/v1/updates/install", {
          method: "POST", credentials: "same-origin", body: body,
          headers: { "Content-Type": "application/json", "X-Keel-Token": token }
        }).then(function (r) { return r.text().then(function (t) { answered(stop, r.status, t); }); })
          .catch(function () { answered(stop, 599, '{"error":"the connection to the appliance broke"}'); });
      });
    });
  });
})();
