/*
 * The chat page: reads the conversation from the json_script payload "chat-data", draws it with
 * the same renderer as the live stream, runs the sidebar and the scrolling, and wires the other
 * scripts together (markdown.js, answer.js, socket.js, composer.js, loaded before this one).
 *
 * The conversation's state lives here: the question waiting for "started" (pending), the answer
 * being streamed (active, what Stop stops), and what each server frame does to them
 * (README.md, "Websocket protocol"):
 *
 *   client -> {type:"send", conversation, content, model, temperature, max_tokens}
 *   client -> {type:"stop", message}
 *   client -> {type:"resume", message}   (after a reconnect / for a page-loaded answer the
 *                                         server is still generating)
 *   server -> started | delta | done | error | snapshot
 */
(function (chat) {
  "use strict";

  var dataEl = document.getElementById("chat-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var defaults = data.defaults || {};

  var el = {
    scroll: document.getElementById("messages-scroll"),
    messages: document.getElementById("messages"),
    jump: document.getElementById("jump-latest"),
    sidebar: document.getElementById("sidebar"),
    sidebarToggle: document.getElementById("sidebar-toggle"),
    backdrop: document.getElementById("sidebar-backdrop"),
    convList: document.getElementById("conv-list"),
  };

  var conversationId = data.conversation;
  var pending = null;       // {frame, userEl, stopRequested, sent}: a question waiting for "started"
  var active = null;        // the answer being streamed (what Stop stops)
  var lastQuestion = null;  // text of the last user question (what Retry resends)
  var signedOut = false;

  function busy() { return !!(pending || active); }

  var answers = chat.answers({
    loginUrl: data.login_url,
    changed: afterContentChange,
    stopClicked: function (m) { stopDetached(m); composer.focus(); },
  });

  /* ------------------------------------------------------------------------------------------
   * Scrolling: follow the answer unless the person scrolled up
   * ---------------------------------------------------------------------------------------- */

  var follow = true;
  var jumping = false;   // a smooth scroll to the bottom is under way
  var jumpTimer = 0;
  function distanceFromBottom() {
    return el.scroll.scrollHeight - el.scroll.scrollTop - el.scroll.clientHeight;
  }
  function updateJump() {
    el.jump.hidden = follow || distanceFromBottom() < 4;
  }
  el.scroll.addEventListener("scroll", function () {
    var near = distanceFromBottom() < 64;
    if (jumping && !near) return;
    if (near) jumping = false;
    follow = near;
    updateJump();
  }, { passive: true });
  // A person scrolling up during a smooth jump wins.
  el.scroll.addEventListener("wheel", function (ev) { if (ev.deltaY < 0) jumping = false; }, { passive: true });
  el.scroll.addEventListener("touchmove", function () { jumping = false; }, { passive: true });
  function scrollToBottom(smooth) {
    follow = true;
    // A long way down is not worth animating (and the answer keeps growing meanwhile).
    var far = distanceFromBottom() > el.scroll.clientHeight * 1.5;
    var reduce = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    if (smooth && !far && !reduce) {
      jumping = true;
      el.scroll.scrollTo({ top: el.scroll.scrollHeight, behavior: "smooth" });
      clearTimeout(jumpTimer);
      jumpTimer = setTimeout(function () { jumping = false; }, 700);
    } else {
      el.scroll.scrollTop = el.scroll.scrollHeight;
    }
    updateJump();
  }
  function afterContentChange(force) {
    if (follow || force) {
      follow = true;
      el.scroll.scrollTop = el.scroll.scrollHeight;
    }
    updateJump();
  }
  el.jump.addEventListener("click", function () {
    scrollToBottom(true);
    composer.focus();
  });

  /* ------------------------------------------------------------------------------------------
   * Sending, stopping, retrying
   * ---------------------------------------------------------------------------------------- */

  var composer = chat.composer({
    defaults: defaults,
    models: data.models,
    busy: busy,
    stopping: function () { return !!((active && active.stopping) || (pending && pending.stopRequested)); },
    send: send,
    stop: stop,
    closeSidebar: function () {
      if (!document.body.classList.contains("sidebar-open")) return false;
      closeSidebar(true);
      return true;
    },
  });

  function send(text) {
    text = (text || "").trim();
    if (!text || busy()) return false;
    if (!composer.checkLength(text)) return false;
    var s = composer.settings();
    var frame = {
      type: "send",
      conversation: conversationId == null ? null : conversationId,
      content: text,
      model: s.model,
      temperature: s.temperature,
      max_tokens: s.max_tokens,
    };
    answers.retireRetryButtons();
    composer.hint("");
    lastQuestion = text;
    pending = { frame: frame, userEl: answers.question(text), stopRequested: false, sent: false };
    scrollToBottom(false);
    pending.sent = sock.send(frame);
    if (!pending.sent) composer.hint("Waiting for the connection… your message will be sent as soon as it is back.", true);
    composer.update();
    return true;
  }

  function stop() {
    if (pending) {
      pending.stopRequested = true;
      if (!pending.sent) {
        // Never left the browser: take it back.
        var text = pending.frame.content;
        pending.userEl.remove();
        pending = null;
        composer.restore(text);
        composer.hint("Not sent.");
      }
    } else if (active && !active.stopping) {
      active.stopping = true;
      sock.send({ type: "stop", message: active.id });
      active.note("Stopping…");
      var m = active;
      // If no "done" comes back (for example the answer belongs to a stream this socket is not
      // following), do not leave the page stuck in Stop mode.
      setTimeout(function () {
        if (active === m && m.stopping) {
          m.status = "cancelled";
          m.draw();
          m.note("Stop requested. Reload to see the final text.");
          active = null;
          composer.update();
        }
      }, 8000);
    }
    composer.update();
    composer.focus();
  }

  // Stop an answer this page is not following (Stop works from any socket of its owner).
  function stopDetached(m) {
    if (!sock.send({ type: "stop", message: m.id })) {
      m.note("Not connected. Try again in a moment.", true);
      return;
    }
    m.stopSentAt = Date.now();
    m.note("Stopping…");
    setTimeout(function () {
      if (m.stopSentAt && m.status === "detached") m.note("Stopped. Reload to see the final text.");
    }, 2000);
  }

  function retryLast() {
    if (busy() || !lastQuestion) return;
    var text = lastQuestion;
    // The text came back into the composer when nothing was started; do not leave a copy there.
    composer.discard(text);
    send(text);
    composer.focus();
  }

  // After an answer broke off with text already shown: a new turn that asks the model to go on
  // from it (the partial answer is in the history it reads), so nothing shown is sent twice.
  var CONTINUE_PROMPT = "Please continue your previous answer exactly where it stopped, without repeating what you already wrote.";
  function continueLast() {
    if (busy()) return;
    send(CONTINUE_PROMPT);
    composer.focus();
  }

  // The question never got an answer started: it goes back into the composer.
  function failPending() {
    if (!pending) return;
    var text = pending.frame.content;
    pending.userEl.remove();
    pending = null;
    composer.restore(text);
    composer.update();
  }

  // This page cannot follow the answer any more (the server did not take up a resume): keep
  // what is shown, say how to get the rest, and give the composer back.
  function giveUpOnStream(m) {
    sock.resumeDone(m.id);
    m.settle("detached");
    m.note(m.seq === null ? "Still generating… reload to see the rest."
      : "The connection was interrupted while this answer was being written. Reload to see the rest.", true);
    if (active === m) active = null;
    composer.update();
  }

  function showSignedOut(detail) {
    if (signedOut) return;
    signedOut = true;
    sock.signOut();
    answers.errorCard({ code: "unauthenticated", detail: detail, login: true });
    if (active) { giveUpOnStream(active); }
  }

  /* ------------------------------------------------------------------------------------------
   * Sidebar
   * ---------------------------------------------------------------------------------------- */

  var narrow = window.matchMedia("(max-width: 860px)");
  function sidebarVisible() {
    return narrow.matches ? document.body.classList.contains("sidebar-open")
      : !document.body.classList.contains("sidebar-collapsed");
  }
  function syncToggle() {
    el.sidebarToggle.setAttribute("aria-expanded", sidebarVisible() ? "true" : "false");
    el.backdrop.hidden = !(narrow.matches && sidebarVisible());
  }
  function openSidebar() {
    document.body.classList.add("sidebar-open");
    syncToggle();
    var first = el.sidebar.querySelector("[aria-current=page]") || el.sidebar.querySelector("a");
    if (first) first.focus();
  }
  function closeSidebar(returnFocus) {
    document.body.classList.remove("sidebar-open");
    syncToggle();
    if (returnFocus) el.sidebarToggle.focus();
  }
  el.sidebarToggle.addEventListener("click", function () {
    if (narrow.matches) {
      if (sidebarVisible()) closeSidebar(false); else openSidebar();
    } else {
      document.body.classList.toggle("sidebar-collapsed");
      syncToggle();
    }
  });
  el.backdrop.addEventListener("click", function () { closeSidebar(false); });
  (narrow.addEventListener ? narrow.addEventListener.bind(narrow, "change") : narrow.addListener.bind(narrow))(function () {
    document.body.classList.remove("sidebar-open");
    syncToggle();
  });
  syncToggle();

  function markCurrent(link) {
    el.sidebar.querySelectorAll("[aria-current=page]").forEach(function (a) { a.removeAttribute("aria-current"); });
    if (link) link.setAttribute("aria-current", "page");
  }

  // Put a conversation at the top of "Today" (a new one, or one that just got a new question).
  function bumpConversation(id, title) {
    var link = el.convList.querySelector('a[data-conversation="' + id + '"]');
    var li;
    if (link) {
      li = link.parentNode;
      var oldList = li.parentNode;
      li.remove();
      if (!oldList.children.length) oldList.closest(".conv-group").remove();
    } else {
      li = document.createElement("li");
      link = document.createElement("a");
      link.className = "conv-link";
      link.dataset.conversation = id;
      link.href = String(data.conversation_url || "/c/{id}/").replace("{id}", encodeURIComponent(id));
      li.appendChild(link);
    }
    if (title) { link.textContent = title; link.title = title; }
    var empty = document.getElementById("conv-empty");
    if (empty) empty.remove();
    var today = el.convList.querySelector('.conv-group[data-group="Today"]');
    if (!today) {
      today = document.createElement("section");
      today.className = "conv-group";
      today.dataset.group = "Today";
      var h = document.createElement("h2");
      h.className = "conv-group-title";
      h.id = "conv-group-today";
      h.textContent = "Today";
      today.setAttribute("aria-labelledby", h.id);
      today.appendChild(h);
      today.appendChild(document.createElement("ul"));
      el.convList.insertBefore(today, el.convList.firstChild);
    }
    var ul = today.querySelector("ul");
    ul.insertBefore(li, ul.firstChild);
    markCurrent(link);
  }

  /* ------------------------------------------------------------------------------------------
   * Frames from the server
   * ---------------------------------------------------------------------------------------- */

  function onStarted(f) {
    if (!pending) return;  // an answer started elsewhere (another tab): it shows on reload
    var p = pending;
    pending = null;
    composer.hint("");
    if (f.user_message != null) p.userEl.dataset.message = f.user_message;
    var isNew = conversationId == null || conversationId !== f.conversation;
    conversationId = f.conversation;
    if (isNew) {
      var url = String(data.conversation_url || "/c/{id}/").replace("{id}", encodeURIComponent(f.conversation));
      try { history.replaceState({ conversation: f.conversation }, "", url); } catch (e) { /* file:// */ }
      var newChat = el.sidebar.querySelector(".new-chat");
      if (newChat) newChat.removeAttribute("aria-current");
    }
    bumpConversation(f.conversation, f.title);
    if (f.title) document.title = f.title + " · Gateway Portal";
    var m = answers.answer({ id: f.message, status: "streaming", seq: 0, model: p.frame.model });
    m.requestId = f.request_id || "";
    if (f.left_out) m.leftOut(f.left_out);
    active = m;
    m.draw();
    if (p.stopRequested) {
      m.stopping = true;
      sock.send({ type: "stop", message: m.id });
      m.note("Stopping…");
    }
    composer.update();
  }

  function onDelta(f) {
    var m = answers.find(f.message);
    if (!m || m.status !== "streaming") return;
    var got = m.addDelta(Number(f.seq), String(f.text || ""));
    if (got === "whole") sock.resumeDone(m.id);
    else if (got === "gap" && !sock.resuming(m.id)) sock.resume(m.id);
  }

  function onSnapshot(f) {
    var m = answers.find(f.message);
    if (!m) return;
    sock.resumeDone(m.id);
    if (!m.takeSnapshot(Number(f.seq), f.text)) return;
    if (m.status === "streaming") {
      m.note(m.stopping ? "Stopping…" : "");
      if (!active && !pending) { active = m; composer.update(); }
    }
    if (f.status && f.status !== "streaming" && m.status === "streaming") {
      finish(m, f.status);
      return;
    }
    m.drawSoon();
  }

  function finish(m, status) {
    sock.resumeDone(m.id);
    m.settle(status || "complete");
    m.drawMeta();
    if (m.stale) m.note("This answer finished while the page was away. Reload to see all of it.");
    else m.note("");
    if (active === m) active = null;
    composer.update();
    afterContentChange();
  }

  function onDone(f) {
    var m = answers.find(f.message);
    if (!m) return;
    if (typeof f.content === "string") { m.text = f.content; m.stale = false; }
    else if (m.seq === null) m.stale = true;
    m.setOutcome(f);
    finish(m, f.status || (f.finish_reason === "cancelled" ? "cancelled" : "complete"));
  }

  function onError(f) {
    var code = String(f.code || "error");
    if (code === "not_running") {
      // A Stop for an answer that had already ended: nothing went wrong, say where the text is.
      var nm = answers.find(f.message);
      if (nm && (nm.status === "streaming" || nm.status === "detached")) {
        nm.stopSentAt = 0;
        if (active === nm) active = null;
        nm.status = "detached";
        nm.draw();
        nm.note("This answer is no longer being written here. Reload to see how it ended.");
        composer.update();
      }
      return;
    }
    if (code === "unauthenticated") {
      showSignedOut(f.detail);
      failPending();
      return;
    }
    if (f.message == null) {
      // A resume this server does not understand: say so quietly instead of showing a card.
      var resuming = sock.resumingIds();
      if (code === "bad_frame" && resuming.length && !pending) {
        resuming.forEach(function (id) {
          var rm = answers.find(id);
          if (rm && rm.status === "streaming") giveUpOnStream(rm);
        });
        sock.forgetResumes();
        return;
      }
      // Nothing was started: the question goes back into the composer so nothing is lost.
      var hadPending = !!pending;
      if (pending) {
        var text = pending.frame.content;
        pending.userEl.remove();
        pending = null;
        composer.restore(text);
      }
      answers.errorCard({
        code: code, detail: f.detail,
        retry: hadPending && f.retryable ? retryLast : null, retryAfter: f.retry_after,
      });
      if (!el.messages.querySelector(".msg")) answers.hideEmpty();
      composer.update();
      return;
    }
    var m = answers.find(f.message);
    if (m) {
      m.settle("error");
      m.note("");
      if (f.usage) m.setOutcome(f);
      if (m.hasTokens()) m.drawMeta();
      if (active === m) active = null;
    }
    answers.errorCard({
      code: code, detail: f.detail, after: m ? m.el : null,
      retry: f.retryable ? retryLast : null, retryAfter: f.retry_after,
      continueAnswer: f.retryable && m && m.text ? continueLast : null,
    });
    composer.update();
  }

  var handlers = { started: onStarted, delta: onDelta, done: onDone, error: onError, snapshot: onSnapshot };

  /* ------------------------------------------------------------------------------------------
   * The socket
   * ---------------------------------------------------------------------------------------- */

  var path = data.ws_path || "/ws/chat/";
  var sock = chat.socket({
    url: /^wss?:\/\//.test(path) ? path : (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path,
    onOpen: function () {
      // A question typed while offline goes now.
      if (pending && !pending.sent) {
        pending.sent = sock.send(pending.frame);
        composer.hint("");
      }
    },
    onFrame: function (f) {
      var h = handlers[f.type];
      if (h) h(f);
    },
    onClose: function (ev) {
      if (ev && ev.code === 4401) { showSignedOut(); failPending(); return; }
      if (pending && pending.sent) {
        // We cannot tell whether the question reached the server before the drop.
        var text = pending.frame.content;
        pending.userEl.remove();
        pending = null;
        composer.restore(text);
        answers.errorCard({
          code: "connection_lost",
          detail: "The connection dropped while your question was being sent. It is back in the box below; send it again when the connection returns (reload first if you are unsure whether it arrived).",
        });
        composer.update();
      }
    },
    streaming: function () {
      var ids = [];
      answers.forEach(function (m) { if (m.status === "streaming") ids.push(m.id); });
      return ids;
    },
    onResumeTimeout: function (id) {
      var m = answers.find(id);
      if (m && m.status === "streaming") giveUpOnStream(m);
    },
  });

  chat.markdown.copyButtons(el.messages, answers.textOf);

  /* ------------------------------------------------------------------------------------------
   * Start: draw the stored conversation with the same renderer, then connect
   * ---------------------------------------------------------------------------------------- */

  var stored = data.messages || [];
  var lastAssistantId = null;
  stored.forEach(function (msg) { if (msg.role === "assistant") lastAssistantId = msg.id; });
  stored.forEach(function (msg, i) {
    if (msg.role === "user") {
      answers.question(msg.content, msg.id);
      lastQuestion = msg.content;
      return;
    }
    if (msg.role !== "assistant") return;
    var m = answers.answer({
      id: msg.id, content: msg.content, status: msg.status, model: msg.model,
      seq: msg.status === "streaming" ? null : 0,
    });
    if (msg.status !== "streaming") m.setOutcome(msg);
    m.draw();
    if (msg.status === "streaming") {
      m.note("Still generating… reload to see the rest.");
      if (msg.id === lastAssistantId && !active) active = m;
    } else if (msg.status === "error") {
      if (m.hasTokens()) m.drawMeta();  // not "≈0 tokens" noise
      var isLast = i === stored.length - 1;
      answers.errorCard({
        code: msg.code, detail: msg.detail, after: m.el,
        retry: isLast && msg.retryable ? retryLast : null,
        continueAnswer: isLast && msg.retryable && msg.content ? continueLast : null,
      });
    } else {
      m.drawMeta();
    }
  });
  if (stored.length) answers.hideEmpty();

  composer.update();
  requestAnimationFrame(function () { scrollToBottom(false); });
  if (window.matchMedia("(pointer: fine)").matches) composer.focus();
  sock.connect();
})(window.GatewayChat = window.GatewayChat || {});
