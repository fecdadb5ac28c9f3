/*
 * Gateway Portal chat page. Plain JS, no build step.
 *
 * Reads the page's json_script payload (id "chat-data"), draws the stored conversation, and
 * speaks the websocket protocol of docs/DESIGN ("Websocket protocol"):
 *
 *   client -> {type:"send", conversation, content, model, temperature, max_tokens}
 *   client -> {type:"stop", message}
 *   client -> {type:"resume", message, after_seq}      (after a reconnect / for a page-loaded
 *                                                     answer the server is still generating)
 *   server -> started | delta | done | error | snapshot
 *
 * Model output is untrusted: it is rendered by ONE function (renderMarkdown) for both the live
 * stream and the stored conversation: markdown-it (raw HTML off) -> DOMPurify -> DOM fragment.
 * User text is only ever set with textContent.
 *
 * Tests can replace the socket: set window.GatewayPortalSocket = (url) => fakeSocket before this
 * script runs; the fake needs send(), close(), readyState and onopen/onmessage/onclose.
 */
(function () {
  "use strict";

  var dataEl = document.getElementById("chat-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var defaults = data.defaults || {};
  var MAX_TOKENS_LIMIT = Number(defaults.max_tokens_limit) || 4096;

  var el = {
    scroll: document.getElementById("messages-scroll"),
    messages: document.getElementById("messages"),
    empty: document.getElementById("empty-state"),
    banner: document.getElementById("conn-banner"),
    jump: document.getElementById("jump-latest"),
    form: document.getElementById("composer"),
    input: document.getElementById("composer-input"),
    model: document.getElementById("model-select"),
    temperature: document.getElementById("temperature"),
    maxTokens: document.getElementById("max-tokens"),
    settings: document.getElementById("settings"),
    settingsValues: document.getElementById("settings-values"),
    settingsReset: document.getElementById("settings-reset"),
    button: document.getElementById("send-button"),
    buttonText: document.getElementById("send-text"),
    hint: document.getElementById("composer-hint"),
    sidebar: document.getElementById("sidebar"),
    sidebarToggle: document.getElementById("sidebar-toggle"),
    backdrop: document.getElementById("sidebar-backdrop"),
    convList: document.getElementById("conv-list"),
  };

  /* ------------------------------------------------------------------------------------------
   * Markdown, safely: the one renderer
   * ---------------------------------------------------------------------------------------- */

  var SAFE_URI = /^(?:https?:|mailto:)/i;

  var md = window.markdownit({
    html: false,
    linkify: true,
    typographer: false,
    breaks: false,
    highlight: function (code, lang) {
      var language = String(lang || "").trim().split(/\s+/)[0].toLowerCase();
      if (language && window.hljs && window.hljs.getLanguage(language)) {
        try {
          return window.hljs.highlight(code, { language: language, ignoreIllegals: true }).value;
        } catch (e) { /* fall through to plain, escaped by markdown-it */ }
      }
      return "";
    },
  });
  // Images would load arbitrary URLs chosen by the model (a known way to leak a conversation
  // without a click): `![alt](url)` becomes a plain link "image: alt" that only a click follows.
  md.renderer.rules.image = function (tokens, idx) {
    var token = tokens[idx];
    var alt = token.children ? token.children.map(function (t) { return t.content; }).join("") : token.content;
    return '<a href="' + md.utils.escapeHtml(token.attrGet("src") || "") + '">' +
      md.utils.escapeHtml("image: " + (alt || token.attrGet("src") || "")) + "</a>";
  };

  var purify = window.DOMPurify;
  purify.addHook("afterSanitizeAttributes", function (node) {
    if (node.nodeName === "A") {
      var href = node.getAttribute("href");
      if (href && SAFE_URI.test(href.trim())) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      } else {
        // javascript:, data:, relative and other links are shown as plain, unclickable text.
        node.removeAttribute("href");
        node.removeAttribute("target");
        node.classList.add("link-blocked");
        node.setAttribute("title", "Link removed for safety");
      }
    }
  });
  var PURIFY_CONFIG = {
    ALLOWED_URI_REGEXP: SAFE_URI,
    FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select",
      "iframe", "object", "embed", "video", "audio", "source", "picture"],
    FORBID_ATTR: ["style", "id", "name", "srcset"],
    RETURN_DOM_FRAGMENT: true,
  };

  function renderMarkdown(text) {
    var html = md.render(text || "");
    var frag = purify.sanitize(html, PURIFY_CONFIG);
    decorate(frag);
    return frag;
  }

  // Code blocks get a header with the language and a Copy button; tables scroll sideways.
  function decorate(root) {
    root.querySelectorAll("pre > code").forEach(function (code) {
      var pre = code.parentNode;
      code.classList.add("hljs");
      var lang = "";
      code.classList.forEach(function (c) {
        if (c.indexOf("language-") === 0) lang = c.slice(9);
      });
      var block = document.createElement("div");
      block.className = "code-block";
      var head = document.createElement("div");
      head.className = "code-head";
      var label = document.createElement("span");
      label.className = "code-lang";
      label.textContent = lang || "text";
      var copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-btn";
      copy.setAttribute("data-copy", "code");
      copy.setAttribute("aria-label", "Copy code" + (lang ? " (" + lang + ")" : ""));
      copy.textContent = "Copy";
      head.appendChild(label);
      head.appendChild(copy);
      pre.parentNode.insertBefore(block, pre);
      block.appendChild(head);
      block.appendChild(pre);
    });
    root.querySelectorAll("table").forEach(function (table) {
      var wrap = document.createElement("div");
      wrap.className = "table-wrap";
      table.parentNode.insertBefore(wrap, table);
      wrap.appendChild(table);
    });
  }

  // Where the streaming caret goes: the deepest last element, unless text follows it.
  function caretHost(root) {
    var host = root;
    for (;;) {
      if (host.nodeName === "CODE") break;
      var last = host.lastElementChild;
      if (!last || last.nodeName === "BR" || last.nodeName === "HR") break;
      var after = last.nextSibling;
      while (after && after.nodeType === 3 && !after.textContent.trim()) after = after.nextSibling;
      if (after) break;
      if (last.classList && last.classList.contains("code-head")) break;
      host = last;
    }
    return host;
  }

  /* ------------------------------------------------------------------------------------------
   * Messages
   * ---------------------------------------------------------------------------------------- */

  var ERROR_TITLES = {
    quota_exceeded: "Usage limit reached",
    rate_limited: "The AI service is busy",
    upstream_unavailable: "The AI service is unavailable",
    upstream_interrupted: "The answer was interrupted",
    upstream_rejected: "The AI service refused this request",
    upstream_timeout: "The AI service took too long",
    invalid_request: "This message could not be sent",
    bad_frame: "Something went wrong in the page",
    not_found: "Not found",
    unauthenticated: "You are signed out",
    connection_lost: "The connection dropped",
    too_many_streams: "Too many answers at once",
    internal_error: "Something went wrong in the portal",
  };
  var ERROR_DETAILS = {
    quota_exceeded: "You have used your allowance for now. Try again later or ask your administrator.",
    rate_limited: "Too many requests right now. Try again in a moment.",
    upstream_unavailable: "The AI service could not be reached. Try again in a moment.",
    upstream_interrupted: "The answer stopped before it was finished. Try again.",
    unauthenticated: "Your session has ended. Log in again to continue.",
  };
  // Errors loaded with a stored answer (no "retryable" flag there): these are worth a Retry.
  var RETRYABLE_STORED = ["rate_limited", "upstream_unavailable", "upstream_interrupted", "upstream_timeout"];

  var byId = new Map();       // assistant message id -> state
  var lastQuestion = null;    // text of the last user question (what Retry resends)

  function hideEmpty() { if (el.empty) el.empty.hidden = true; }

  function srLabel(text) {
    var s = document.createElement("span");
    s.className = "visually-hidden";
    s.textContent = text;
    return s;
  }

  function addUserMessage(text, id) {
    hideEmpty();
    var art = document.createElement("article");
    art.className = "msg msg-user";
    art.dataset.role = "user";
    if (id != null) art.dataset.message = id;
    art.appendChild(srLabel("You said:"));
    var bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = text;
    art.appendChild(bubble);
    el.messages.appendChild(art);
    return art;
  }

  function addAssistantMessage(init) {
    hideEmpty();
    var art = document.createElement("article");
    art.className = "msg msg-assistant";
    art.dataset.role = "assistant";
    art.dataset.message = init.id;
    art.appendChild(srLabel("Assistant said:"));
    var body = document.createElement("div");
    body.className = "msg-body markdown md";
    body.setAttribute("aria-live", "polite");
    var note = document.createElement("p");
    note.className = "msg-note";
    note.hidden = true;
    var meta = document.createElement("div");
    meta.className = "msg-meta meta";
    meta.hidden = true;
    art.appendChild(body);
    art.appendChild(note);
    art.appendChild(meta);
    el.messages.appendChild(art);
    var m = {
      id: init.id,
      el: art, body: body, note: note, meta: meta,
      text: init.content || "",
      status: init.status || "streaming",
      seq: init.seq === undefined ? 0 : init.seq,   // null: page-loaded, position unknown
      buffer: new Map(),
      model: init.model_id || "",
      finish: init.finish_reason || "",
      filters: init.filters || [],
      stats: init.stats || {},
      frame: 0,
      stopping: false,
    };
    if (m.id != null) byId.set(m.id, m);
    return m;
  }

  function render(m) {
    m.frame = 0;
    var streaming = m.status === "streaming";
    m.body.setAttribute("aria-busy", streaming ? "true" : "false");
    var frag = renderMarkdown(m.text);
    var caret = null;
    if (streaming) {
      caret = document.createElement("span");
      caret.className = "caret";
      caret.setAttribute("aria-hidden", "true");
    }
    if (!m.text && streaming) {
      var p = document.createElement("p");
      p.className = "thinking";
      p.appendChild(caret);
      p.appendChild(srLabel("Waiting for the answer"));
      frag.appendChild(p);
      caret = null;
    } else if (!m.text.trim() && (m.status === "complete" || m.status === "cancelled")) {
      var e = document.createElement("p");
      e.className = "muted";
      e.textContent = m.status === "cancelled" ? "Stopped before any text arrived." : "The answer was empty.";
      frag.appendChild(e);
    }
    if (caret) caretHost(frag).appendChild(caret);
    m.body.replaceChildren(frag);
    afterContentChange();
  }

  // While streaming, re-render at most once per animation frame.
  function scheduleRender(m) {
    if (m.frame) return;
    m.frame = requestAnimationFrame(function () { render(m); });
  }
  function renderNow(m) {
    if (m.frame) cancelAnimationFrame(m.frame);
    render(m);
  }

  function fmtSeconds(ms) { return (ms / 1000).toFixed(2) + " s"; }
  function fmtInt(n) { return Number(n).toLocaleString("en-US"); }

  function filterLabel(f) {
    if (f.label) return f.label;
    var count = f.count || 1;
    var name = String(f.filter || "filter").replace(/_/g, " ");
    return name + " filter applied" + (count > 1 ? " (" + count + "×)" : "");
  }

  function renderMeta(m) {
    var parts = [];
    function add(text, cls, title) {
      var s = document.createElement("span");
      s.className = "meta-item" + (cls ? " " + cls : "");
      s.textContent = text;
      if (title) s.title = title;
      parts.push(s);
    }
    var st = m.stats || {};
    if (m.status === "cancelled") add("Stopped", "meta-stopped");
    if (m.finish === "length") add("Cut off at the max tokens limit", "meta-warn");
    if (m.model) add(m.model, "meta-model");
    if (st.output_tokens != null) {
      var est = st.token_source === "estimate";
      var title = "Input " + fmtInt(st.input_tokens || 0) + " tokens, output " + fmtInt(st.output_tokens) +
        " tokens" + (est ? " (estimated)" : " (reported by the AI service)");
      add((est ? "≈" : "") + fmtInt(st.output_tokens) + " tokens", "", title);
    }
    if (st.ttft_ms != null) add("TTFT " + fmtSeconds(st.ttft_ms), "", "Time to first token");
    if (st.latency_ms != null) add("total " + fmtSeconds(st.latency_ms), "", "Total time");
    (m.filters || []).forEach(function (f) {
      add(filterLabel(f), "meta-filter", "A safety filter changed this answer (" + (f.filter || "filter") + ")");
    });
    m.meta.replaceChildren();
    var list = document.createElement("span");
    list.className = "meta-list";
    parts.forEach(function (p) { list.appendChild(p); });
    m.meta.appendChild(list);
    if (m.text) {
      var copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-btn meta-copy";
      copy.setAttribute("data-copy", "answer");
      copy.setAttribute("aria-label", "Copy answer as markdown");
      copy.textContent = "Copy";
      m.meta.appendChild(copy);
    }
    m.meta.hidden = false;
  }

  function setNote(m, text, offerStop) {
    m.note.replaceChildren();
    if (text) m.note.appendChild(document.createTextNode(text));
    if (text && offerStop) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "link-btn";
      b.textContent = "Stop generating";
      b.addEventListener("click", function () { stopDetached(m); el.input.focus(); });
      m.note.appendChild(document.createTextNode(" "));
      m.note.appendChild(b);
    }
    m.note.hidden = !text;
  }

  // Stop an answer this page is not following (Stop works from any socket of its owner).
  function stopDetached(m) {
    if (!transmit({ type: "stop", message: m.id })) {
      setNote(m, "Not connected. Try again in a moment.", true);
      return;
    }
    m.stopSentAt = Date.now();
    setNote(m, "Stopping…");
    setTimeout(function () {
      if (m.stopSentAt && m.status === "detached") setNote(m, "Stopped. Reload to see the final text.");
    }, 2000);
  }

  // An error card inside the conversation, in the words of the error frame.
  function addErrorCard(opts) {
    hideEmpty();
    var card = document.createElement("div");
    card.className = "error-card";
    card.setAttribute("role", "alert");
    var titleText = ERROR_TITLES[opts.code] || "Something went wrong";
    var detailText = opts.detail || ERROR_DETAILS[opts.code] || "Please try again.";
    // When the detail already says it ("The AI service is busy; try again in 20 s"), no title.
    var echo = detailText.toLowerCase().indexOf(titleText.toLowerCase()) === 0;
    if (!echo) {
      var title = document.createElement("p");
      title.className = "error-title";
      title.textContent = titleText;
      card.appendChild(title);
    }
    var detail = document.createElement("p");
    detail.className = "error-detail";
    detail.textContent = detailText;
    card.appendChild(detail);
    var actions = document.createElement("div");
    actions.className = "error-actions";
    if (opts.login) {
      var a = document.createElement("a");
      a.className = "btn btn-small btn-primary";
      a.href = (data.login_url || "/accounts/login/") + "?next=" + encodeURIComponent(location.pathname);
      a.textContent = "Log in";
      actions.appendChild(a);
    }
    var btn = null;
    if (opts.retry) {
      btn = document.createElement("button");
      btn.type = "button";
      btn.className = "btn btn-small retry-btn";
      btn.textContent = "Retry";
      btn.addEventListener("click", function () {
        if (btn.disabled) return;
        opts.retry();
      });
      actions.appendChild(btn);
    }
    if (actions.childNodes.length) card.appendChild(actions);
    var anchor = opts.after;
    if (anchor && anchor.isConnected) anchor.appendChild(card);
    else el.messages.appendChild(card);
    if (btn && Number(opts.retryAfter) > 0) startCountdown(btn, Number(opts.retryAfter));
    afterContentChange(true);
    return card;
  }

  // "Retry in 20 s", counting down; the button works once the wait is over.
  function startCountdown(btn, wait) {
    var until = Date.now() + wait * 1000;
    var timer = 0;
    btn.disabled = true;
    function tick() {
      var left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0 || !btn.isConnected) {
        btn.disabled = false;
        btn.textContent = "Retry";
        clearInterval(timer);
        return;
      }
      btn.textContent = "Retry in " + left + " s";
    }
    timer = setInterval(tick, 1000);
    tick();
  }


  // Once something new is sent, older Retry buttons no longer make sense.
  function retireRetryButtons() {
    el.messages.querySelectorAll(".retry-btn").forEach(function (b) { b.remove(); });
  }

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
    el.input.focus();
  });

  /* ------------------------------------------------------------------------------------------
   * Composer state: idle | sending (waiting for "started") | streaming
   * ---------------------------------------------------------------------------------------- */

  var conversationId = data.conversation;
  var pending = null;   // {frame, userEl, stopRequested, sent}
  var active = null;    // assistant message state being streamed (what Stop stops)

  function busy() { return !!(pending || active); }

  function updateButton() {
    var stopMode = busy();
    el.button.classList.toggle("is-stop", stopMode);
    el.button.setAttribute("aria-label", stopMode ? "Stop the answer" : "Send");
    el.buttonText.textContent = stopMode ? "Stop" : "Send";
    var stopping = (active && active.stopping) || (pending && pending.stopRequested);
    el.button.disabled = stopMode ? !!stopping : !el.input.value.trim();
    el.form.classList.toggle("is-busy", stopMode);
  }

  var hintTimer = 0;
  function hint(text, sticky) {
    clearTimeout(hintTimer);
    el.hint.textContent = text || "";
    if (text && !sticky) hintTimer = setTimeout(function () { el.hint.textContent = ""; }, 6000);
  }

  function autoGrow() {
    el.input.style.height = "auto";
    var max = Math.max(120, Math.round(window.innerHeight * 0.4));
    el.input.style.height = Math.min(el.input.scrollHeight, max) + "px";
    el.input.classList.toggle("is-scrolling", el.input.scrollHeight > max);
  }

  // Settings: remembered in this browser, clamped to what the server allows.
  var STORE_KEY = "gatewayPortal.settings";
  function readStore() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function writeStore() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify({
        model: el.model.value, temperature: el.temperature.value, max_tokens: el.maxTokens.value,
      }));
    } catch (e) { /* private mode: fine */ }
  }
  var TEMP_MIN = isFinite(parseFloat(defaults.temperature_min)) ? Number(defaults.temperature_min) : 0;
  var TEMP_MAX = isFinite(parseFloat(defaults.temperature_max)) ? Number(defaults.temperature_max) : 1;
  function clampTemperature(v) {
    var n = parseFloat(v);
    if (!isFinite(n)) n = Number(defaults.temperature);
    if (!isFinite(n)) n = 0.7;
    return Math.round(Math.min(TEMP_MAX, Math.max(TEMP_MIN, n)) * 100) / 100;
  }
  function clampMaxTokens(v) {
    var n = parseInt(v, 10);
    if (!isFinite(n)) n = Number(defaults.max_tokens) || 1024;
    return Math.min(MAX_TOKENS_LIMIT, Math.max(1, n));
  }
  function showSettingsValues() {
    el.settingsValues.textContent = clampTemperature(el.temperature.value) + " · " +
      fmtInt(clampMaxTokens(el.maxTokens.value));
  }
  (function loadSettings() {
    var s = readStore();
    if (s.model && (data.models || []).indexOf(s.model) !== -1) el.model.value = s.model;
    if (s.temperature != null && s.temperature !== "") el.temperature.value = clampTemperature(s.temperature);
    if (s.max_tokens != null && s.max_tokens !== "") el.maxTokens.value = clampMaxTokens(s.max_tokens);
    showSettingsValues();
  })();
  [el.model, el.temperature, el.maxTokens].forEach(function (input) {
    input.addEventListener("change", function () {
      if (input === el.temperature) input.value = clampTemperature(input.value);
      if (input === el.maxTokens) input.value = clampMaxTokens(input.value);
      showSettingsValues();
      writeStore();
    });
  });
  el.settingsReset.addEventListener("click", function () {
    el.model.value = defaults.model || el.model.value;
    el.temperature.value = clampTemperature(defaults.temperature);
    el.maxTokens.value = clampMaxTokens(defaults.max_tokens);
    showSettingsValues();
    writeStore();
  });

  function send(text) {
    text = (text || "").trim();
    if (!text || busy()) return false;
    var limit = Number(defaults.max_message_chars) || 0;
    if (limit && text.length > limit) {
      hint("This message is " + fmtInt(text.length) + " characters; the limit is " + fmtInt(limit) +
        ". Shorten it and send again.", true);
      return false;
    }
    el.temperature.value = clampTemperature(el.temperature.value);
    el.maxTokens.value = clampMaxTokens(el.maxTokens.value);
    showSettingsValues();
    var frame = {
      type: "send",
      conversation: conversationId == null ? null : conversationId,
      content: text,
      model: el.model.value,
      temperature: Number(el.temperature.value),
      max_tokens: Number(el.maxTokens.value),
    };
    retireRetryButtons();
    hint("");
    lastQuestion = text;
    pending = { frame: frame, userEl: addUserMessage(text), stopRequested: false, sent: false };
    scrollToBottom(false);
    pending.sent = transmit(frame);
    if (!pending.sent) hint("Waiting for the connection… your message will be sent as soon as it is back.", true);
    updateButton();
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
        restoreComposer(text);
        hint("Not sent.");
      }
    } else if (active && !active.stopping) {
      active.stopping = true;
      transmit({ type: "stop", message: active.id });
      setNote(active, "Stopping…");
      var m = active;
      // If no "done" comes back (for example the answer belongs to a stream this socket is not
      // following), do not leave the page stuck in Stop mode.
      setTimeout(function () {
        if (active === m && m.stopping) {
          m.status = "cancelled";
          renderNow(m);
          setNote(m, "Stop requested. Reload to see the final text.");
          active = null;
          updateButton();
        }
      }, 8000);
    }
    updateButton();
    el.input.focus();
  }

  function restoreComposer(text) {
    if (!el.input.value.trim()) el.input.value = text;
    else if (el.input.value.indexOf(text) === -1) el.input.value = text + "\n\n" + el.input.value;
    autoGrow();
    updateButton();
  }

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (busy()) stop();
    else if (send(el.input.value)) {
      el.input.value = "";
      autoGrow();
      updateButton();
    }
    el.input.focus();
  });
  el.input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      if (!busy()) el.form.requestSubmit ? el.form.requestSubmit() : el.button.click();
    }
  });
  el.input.addEventListener("input", function () { autoGrow(); updateButton(); });
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Escape") return;
    if (document.body.classList.contains("sidebar-open")) { closeSidebar(true); return; }
    if (el.settings.open) { el.settings.open = false; el.input.focus(); return; }
    if (busy()) { ev.preventDefault(); stop(); }
  });
  // Close the settings panel when clicking elsewhere.
  document.addEventListener("click", function (ev) {
    if (el.settings.open && !el.settings.contains(ev.target)) el.settings.open = false;
  });

  function retryLast() {
    if (busy() || !lastQuestion) return;
    var text = lastQuestion;
    // The text came back into the composer when nothing was started; do not leave a copy there.
    if (el.input.value.trim() === text) { el.input.value = ""; autoGrow(); }
    send(text);
    el.input.focus();
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
    hint("");
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
    var m = addAssistantMessage({ id: f.message, status: "streaming", seq: 0, model_id: p.frame.model });
    m.requestId = f.request_id || "";
    active = m;
    render(m);
    if (p.stopRequested) {
      m.stopping = true;
      transmit({ type: "stop", message: m.id });
      setNote(m, "Stopping…");
    }
    updateButton();
  }

  function applyDelta(m, seq, text) {
    m.text += text;
    m.seq = seq;
  }

  function onDelta(f) {
    var m = byId.get(f.message);
    if (!m || m.status !== "streaming") return;
    var seq = Number(f.seq);
    if (m.seq === null) {
      // Page-loaded answer: its position is unknown until the snapshot; keep what comes first.
      if (isFinite(seq)) m.buffer.set(seq, String(f.text || ""));
      return;
    }
    if (!isFinite(seq) || seq <= m.seq) return;   // already have it
    if (seq === m.seq + 1) {
      if (!m.buffer.size) { resumeOutstanding.delete(m.id); m.resumeAsked = false; }
      applyDelta(m, seq, String(f.text || ""));
      // Deltas that arrived early (after a gap) can follow now.
      while (m.buffer.has(m.seq + 1)) {
        var next = m.seq + 1;
        applyDelta(m, next, m.buffer.get(next));
        m.buffer.delete(next);
      }
      scheduleRender(m);
    } else {
      // A gap: some deltas were missed (the socket dropped). Keep this one and catch up.
      m.buffer.set(seq, String(f.text || ""));
      if (!m.resumeAsked) requestResume(m);
    }
  }

  // The text so far, up to seq; later deltas follow live.
  function onSnapshot(f) {
    var m = byId.get(f.message);
    if (!m) return;
    m.resumeAsked = false;
    resumeOutstanding.delete(m.id);
    var seq = Number(f.seq);
    if (m.seq !== null && isFinite(seq) && seq < m.seq) return;  // we are already further along
    if (typeof f.text === "string") m.text = f.text;
    m.seq = isFinite(seq) ? seq : m.seq;
    m.buffer.forEach(function (_, k) { if (k <= m.seq) m.buffer.delete(k); });
    while (m.buffer.has(m.seq + 1)) {
      var next = m.seq + 1;
      applyDelta(m, next, m.buffer.get(next));
      m.buffer.delete(next);
    }
    if (m.status === "streaming") {
      setNote(m, m.stopping ? "Stopping…" : "");
      if (!active && !pending) { active = m; updateButton(); }
    }
    if (f.status && f.status !== "streaming" && m.status === "streaming") {
      finish(m, { status: f.status });
      return;
    }
    scheduleRender(m);
  }

  function finish(m, info) {
    m.status = info.status || "complete";
    m.buffer.clear();
    resumeOutstanding.delete(m.id);
    renderNow(m);
    renderMeta(m);
    if (m.stale) setNote(m, "This answer finished while the page was away. Reload to see all of it.");
    else setNote(m, "");
    if (active === m) active = null;
    updateButton();
    afterContentChange();
  }

  function onDone(f) {
    var m = byId.get(f.message);
    if (!m) return;
    if (typeof f.content === "string") { m.text = f.content; m.stale = false; }
    else if (m.seq === null) m.stale = true;
    if (f.model) m.model = f.model;
    m.finish = f.finish_reason || "";
    if (Array.isArray(f.filters)) m.filters = f.filters;
    var u = f.usage || {};
    m.stats = {
      input_tokens: u.input_tokens, output_tokens: u.output_tokens, token_source: u.source,
      ttft_ms: f.ttft_ms, latency_ms: f.latency_ms,
    };
    var status = f.status || (f.finish_reason === "cancelled" ? "cancelled" : "complete");
    finish(m, { status: status });
  }

  function onError(f) {
    var code = String(f.code || "error");
    if (code === "not_running") {
      // A Stop for an answer that had already ended: nothing went wrong, say where the text is.
      var nm = byId.get(f.message);
      if (nm && (nm.status === "streaming" || nm.status === "detached")) {
        nm.stopSentAt = 0;
        if (active === nm) active = null;
        nm.status = "detached";
        renderNow(nm);
        setNote(nm, "This answer had already finished. Reload to see all of it.");
        updateButton();
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
      if (code === "bad_frame" && resumeOutstanding.size && !pending) {
        resumeOutstanding.forEach(function (id) {
          var rm = byId.get(id);
          if (rm && rm.status === "streaming") giveUpOnStream(rm);
        });
        resumeOutstanding.clear();
        return;
      }
      // Nothing was started: the question goes back into the composer so nothing is lost.
      var hadPending = !!pending;
      if (pending) {
        var text = pending.frame.content;
        pending.userEl.remove();
        pending = null;
        restoreComposer(text);
      }
      addErrorCard({
        code: code, detail: f.detail,
        retry: hadPending && f.retryable ? retryLast : null, retryAfter: f.retry_after,
      });
      if (!el.messages.querySelector(".msg")) { if (el.empty) el.empty.hidden = true; }
      updateButton();
      return;
    }
    var m = byId.get(f.message);
    if (m) {
      m.status = "error";
      m.buffer.clear();
      renderNow(m);
      setNote(m, "");
      if (m.stats && m.stats.output_tokens > 0) renderMeta(m);
      if (active === m) active = null;
    }
    addErrorCard({
      code: code, detail: f.detail, after: m ? m.el : null,
      retry: f.retryable ? retryLast : null, retryAfter: f.retry_after,
    });
    updateButton();
  }

  // This page cannot follow the answer any more (the server did not take up a resume): keep
  // what is shown, say how to get the rest, and give the composer back.
  function giveUpOnStream(m) {
    resumeOutstanding.delete(m.id);
    m.status = "detached";
    m.buffer.clear();
    renderNow(m);
    setNote(m, m.seq === null ? "Still generating… reload to see the rest."
      : "The connection was interrupted while this answer was being written. Reload to see the rest.", true);
    if (active === m) active = null;
    updateButton();
  }

  function failPending() {
    if (!pending) return;
    var text = pending.frame.content;
    pending.userEl.remove();
    pending = null;
    restoreComposer(text);
    updateButton();
  }

  var signedOut = false;
  function showSignedOut(detail) {
    if (signedOut) return;
    signedOut = true;
    addErrorCard({ code: "unauthenticated", detail: detail, login: true });
    if (active) { giveUpOnStream(active); }
    el.banner.hidden = true;
  }

  var handlers = { started: onStarted, delta: onDelta, done: onDone, error: onError, snapshot: onSnapshot };

  function onFrame(raw) {
    var f;
    try { f = JSON.parse(raw); } catch (e) { return; }
    if (!f || typeof f !== "object") return;
    var h = handlers[f.type];
    if (h) h(f);
  }

  /* ------------------------------------------------------------------------------------------
   * The socket: reconnects by itself with backoff; answers carry on after a reconnect
   * ---------------------------------------------------------------------------------------- */

  var socket = null;
  var attempts = 0;
  var reconnectTimer = 0;
  var everOpened = false;
  var outbox = [];                 // stop frames asked for while disconnected
  var resumeOutstanding = new Set();

  function socketUrl() {
    var path = data.ws_path || "/ws/chat/";
    if (/^wss?:\/\//.test(path)) return path;
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function transmit(frame) {
    if (socket && socket.readyState === 1) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    if (frame.type === "stop") outbox.push(frame);
    return false;
  }

  var RESUME_TIMEOUT_MS = 6000;
  function requestResume(m) {
    if (!transmit({ type: "resume", message: m.id, after_seq: m.seq === null ? 0 : m.seq })) return;
    m.resumeAsked = true;
    resumeOutstanding.add(m.id);
    var ws = socket;
    setTimeout(function () {
      // No snapshot, delta or done for it: stop waiting rather than block the composer.
      if (socket === ws && resumeOutstanding.has(m.id) && m.status === "streaming") giveUpOnStream(m);
    }, RESUME_TIMEOUT_MS);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = 0;
    if (signedOut) return;
    var factory = window.GatewayPortalSocket || function (url) { return new WebSocket(url); };
    var ws;
    try { ws = factory(socketUrl()); } catch (e) { scheduleReconnect(); return; }
    socket = ws;
    ws.onopen = function () {
      if (socket !== ws) return;
      attempts = 0;
      everOpened = true;
      el.banner.hidden = true;
      el.banner.textContent = "";
      // A question typed while offline goes now.
      if (pending && !pending.sent) {
        pending.sent = transmit(pending.frame);
        hint("");
      }
      outbox.splice(0).forEach(transmit);
      // Answers still being written carry on from where this page is.
      byId.forEach(function (m) {
        if (m.status === "streaming") requestResume(m);
      });
    };
    ws.onmessage = function (ev) { if (socket === ws) onFrame(ev.data); };
    ws.onerror = function () { /* onclose follows */ };
    ws.onclose = function (ev) {
      if (socket !== ws) return;
      socket = null;
      resumeOutstanding.clear();
      byId.forEach(function (m) { m.resumeAsked = false; });
      if (ev && ev.code === 4401) { showSignedOut(); failPending(); return; }
      if (pending && pending.sent) {
        // We cannot tell whether the question reached the server before the drop.
        var text = pending.frame.content;
        pending.userEl.remove();
        pending = null;
        restoreComposer(text);
        addErrorCard({
          code: "connection_lost",
          detail: "The connection dropped while your question was being sent. It is back in the box below; send it again when the connection returns (reload first if you are unsure whether it arrived).",
        });
        updateButton();
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (signedOut || reconnectTimer) return;
    el.banner.textContent = everOpened ? "Reconnecting…" : "Connecting…";
    el.banner.hidden = false;
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

  /* ------------------------------------------------------------------------------------------
   * Copy buttons (code blocks and whole answers)
   * ---------------------------------------------------------------------------------------- */

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.className = "visually-hidden";
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      ta.remove();
      if (ok) resolve(); else reject(new Error("copy failed"));
    });
  }
  el.messages.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("[data-copy]");
    if (!btn) return;
    var text = "";
    if (btn.getAttribute("data-copy") === "code") {
      var code = btn.closest(".code-block").querySelector("code");
      text = code ? code.textContent : "";
    } else {
      var art = btn.closest(".msg");
      var m = art && byId.get(isNaN(Number(art.dataset.message)) ? art.dataset.message : Number(art.dataset.message));
      text = m ? m.text : "";
    }
    copyText(text).then(function () {
      btn.textContent = "Copied";
      btn.classList.add("is-done");
    }, function () {
      btn.textContent = "Copy failed";
    }).then(function () {
      setTimeout(function () { btn.textContent = "Copy"; btn.classList.remove("is-done"); }, 1600);
    });
  });

  /* ------------------------------------------------------------------------------------------
   * Start: draw the stored conversation with the same renderer, then connect
   * ---------------------------------------------------------------------------------------- */

  var stored = data.messages || [];
  var lastAssistantId = null;
  stored.forEach(function (msg) { if (msg.role === "assistant") lastAssistantId = msg.id; });
  stored.forEach(function (msg, i) {
    if (msg.role === "user") {
      addUserMessage(msg.content, msg.id);
      lastQuestion = msg.content;
      return;
    }
    if (msg.role !== "assistant") return;
    var m = addAssistantMessage({
      id: msg.id, content: msg.content, status: msg.status, model_id: msg.model_id,
      finish_reason: msg.finish_reason, filters: msg.filters, stats: msg.stats,
      seq: msg.status === "streaming" ? null : 0,
    });
    render(m);
    if (msg.status === "streaming") {
      setNote(m, "Still generating… reload to see the rest.");
      if (msg.id === lastAssistantId && !active) active = m;
    } else if (msg.status === "error") {
      if (msg.stats && msg.stats.output_tokens > 0) renderMeta(m);  // not "≈0 tokens" noise
      var isLast = i === stored.length - 1;
      addErrorCard({
        code: msg.error_code, detail: msg.error_detail, after: m.el,
        retry: isLast && RETRYABLE_STORED.indexOf(msg.error_code) !== -1 ? retryLast : null,
      });
    } else {
      renderMeta(m);
    }
  });
  if (stored.length) hideEmpty();

  autoGrow();
  updateButton();
  requestAnimationFrame(function () { scrollToBottom(false); });
  if (window.matchMedia("(pointer: fine)").matches) el.input.focus();
  connect();
})();
