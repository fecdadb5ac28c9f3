/*
 * The chat socket (README.md, "Websocket protocol"): one websocket that reconnects by itself with
 * backoff, and at once when the browser is back online or the tab is shown again, saying so in
 * the banner meanwhile. On every (re)connect the answers still being written are resumed: the
 * server replies with a snapshot of the text so far (with its seq), then the later deltas. Stop
 * frames asked for while disconnected wait and go out on the next connection.
 *
 *   var sock = GatewayChat.socket({url, onOpen(), onFrame(frame), onClose(event), streaming(),
 *                                  onResumeTimeout(id)})
 *     onOpen: connected (before queued stops and resumes go out)
 *     streaming: ids of the answers this page is still following, resumed on each connect
 *     onResumeTimeout: nothing came for a resume in time; the page stops waiting for that answer
 *   sock.connect(), sock.send(frame) -> sent now?, sock.signOut() (no more reconnects)
 *   sock.resume(id), sock.resuming(id), sock.resumingIds(), sock.resumeDone(id), sock.forgetResumes()
 *
 * Tests can replace the websocket: set window.GatewayPortalSocket = (url) => fakeSocket before the
 * page connects; the fake needs send(), close(), readyState and onopen/onmessage/onclose.
 */
(function (chat) {
  "use strict";

  var RESUME_TIMEOUT_MS = 6000;

  chat.socket = function (options) {
    var banner = document.getElementById("conn-banner");
    var socket = null;
    var attempts = 0;
    var reconnectTimer = 0;
    var everOpened = false;
    var signedOut = false;
    var outbox = [];                 // stop frames asked for while disconnected
    var resumeOutstanding = new Set();

    function transmit(frame) {
      if (socket && socket.readyState === 1) {
        socket.send(JSON.stringify(frame));
        return true;
      }
      if (frame.type === "stop") outbox.push(frame);
      return false;
    }

    function resume(id) {
      if (!transmit({ type: "resume", message: id })) return;
      resumeOutstanding.add(id);
      var ws = socket;
      setTimeout(function () {
        // No snapshot, delta or done for it: stop waiting rather than block the composer.
        if (socket === ws && resumeOutstanding.has(id)) options.onResumeTimeout(id);
      }, RESUME_TIMEOUT_MS);
    }

    function onFrame(raw) {
      var f;
      try { f = JSON.parse(raw); } catch (e) { return; }
      if (!f || typeof f !== "object") return;
      options.onFrame(f);
    }

    function connect() {
      clearTimeout(reconnectTimer);
      reconnectTimer = 0;
      if (signedOut) return;
      var factory = window.GatewayPortalSocket || function (url) { return new WebSocket(url); };
      var ws;
      try { ws = factory(options.url); } catch (e) { scheduleReconnect(); return; }
      socket = ws;
      ws.onopen = function () {
        if (socket !== ws) return;
        attempts = 0;
        everOpened = true;
        banner.hidden = true;
        banner.textContent = "";
        options.onOpen();
        outbox.splice(0).forEach(transmit);
        // Answers still being written carry on from where this page is.
        options.streaming().forEach(resume);
      };
      ws.onmessage = function (ev) { if (socket === ws) onFrame(ev.data); };
      ws.onerror = function () { /* onclose follows */ };
      ws.onclose = function (ev) {
        if (socket !== ws) return;
        socket = null;
        resumeOutstanding.clear();
        options.onClose(ev);
        scheduleReconnect();
      };
    }

    function scheduleReconnect() {
      if (signedOut || reconnectTimer) return;
      banner.textContent = everOpened ? "Reconnecting…" : "Connecting…";
      banner.hidden = false;
      var base = Math.min(15000, 500 * Math.pow(2, attempts));
      attempts += 1;
      var delay = Math.round(base * (0.75 + Math.random() * 0.5));
      reconnectTimer = setTimeout(connect, delay);
    }
    function reconnectSoon() {
      if (!socket && reconnectTimer && !signedOut) connect();
    }
    window.addEventListener("online", reconnectSoon);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") reconnectSoon();
    });

    return {
      connect: connect,
      send: transmit,
      signOut: function () { signedOut = true; banner.hidden = true; },
      resume: resume,
      resuming: function (id) { return resumeOutstanding.has(id); },
      resumingIds: function () { return Array.from(resumeOutstanding); },
      resumeDone: function (id) { resumeOutstanding.delete(id); },
      forgetResumes: function () { resumeOutstanding.clear(); },
    };
  };
})(window.GatewayChat = window.GatewayChat || {});
