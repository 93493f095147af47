// The store console's own script: live alarms over Server-Sent Events (/console/live), an
// optional beep for new ones, and nothing a page needs to work: every form posts without it.
"use strict";
(function () {
  var source = null;
  var audio = null;
  var SOUND_KEY = "lockcase.sound";

  function soundOn() {
    try { return localStorage.getItem(SOUND_KEY) === "on"; } catch (e) { return false; }
  }

  function beep() {
    // WebAudio needs a user gesture first: the sound toggle's click made the context.
    if (!audio || !soundOn()) { return; }
    var osc = audio.createOscillator();
    var gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.value = 0.08;
    osc.connect(gain);
    gain.connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
  }

  function bindSound() {
    var box = document.getElementById("sound-toggle");
    if (!box) { return; }
    box.checked = soundOn();
    box.addEventListener("change", function () {
      try { localStorage.setItem(SOUND_KEY, box.checked ? "on" : "off"); } catch (e) { /* private mode */ }
      if (box.checked && !audio && window.AudioContext) { audio = new AudioContext(); }
      if (audio && audio.state === "suspended") { audio.resume(); }
    });
  }

  function say(text) {
    var region = document.getElementById("live-status");
    if (region) { region.textContent = text; }
  }

  function apply(change) {
    var list = document.getElementById("alarms");
    var existing = document.getElementById("alert-" + change.id);
    if (change.state === "resolved") {
      if (existing) { existing.remove(); }
    } else if (list && list.dataset.store === change.store &&
               (!list.dataset.case || list.dataset.case === change["case"])) {
      var holder = document.createElement("ul");
      holder.innerHTML = change.html;  // rendered and escaped by the server (templates/_alert.html)
      var row = holder.firstElementChild;
      if (existing) { existing.replaceWith(row); } else { list.insertBefore(row, list.firstChild); }
      if (window.htmx) { window.htmx.process(row); }
    }
    var empty = document.getElementById("alarms-empty");
    if (empty && list) { empty.hidden = list.children.length > 0; }
    if (change["new"]) {
      say("New alarm: " + change.kind + (change["case"] ? " at case " + change["case"] : ""));
      beep();
    }
  }

  function connect() {
    var url = document.body.dataset.live;
    if (!url || source || !window.EventSource) { return; }
    source = new EventSource(url);
    source.addEventListener("alert", function (ev) { apply(JSON.parse(ev.data)); });
    document.body.dataset.liveState = "connecting";
    source.addEventListener("open", function () { document.body.dataset.liveState = "open"; });
  }

  function start() {
    bindSound();
    if (!document.body.dataset.live && source) { source.close(); source = null; }  // signed out
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
  // htmx (hx-boost) swaps the body without reloading the page: bind the new one
  document.addEventListener("htmx:afterSettle", start);
})();
