/*
 * Drawing the conversation: each answer's text as it streams (re-rendered at most once a frame,
 * with a caret), the note under it, its meta line (model, tokens, timings, filters, Copy), and
 * error cards with Retry and its countdown. The person's own questions are set as plain text.
 *
 *   var answers = GatewayChat.answers({loginUrl, changed(force), stopClicked(answer)})
 *     changed: the content grew (the page follows it down; force: even if scrolled up)
 *     stopClicked: "Stop generating" was pressed under an answer this page no longer follows
 *   answers.question(text, id)  -> the <article> of a question
 *   answers.answer(init)        -> an Answer; answers.find(id), answers.forEach(fn) by message id
 *   answers.errorCard({code, detail, after, retry, retryAfter, login})
 *   answers.retireRetryButtons(), answers.hideEmpty(), answers.textOf(article)
 *
 * An Answer holds its state (id, text, status, seq, model, finish, filters, usage, timings, stopping, …)
 * for the page to read and set, and draws itself: draw(), drawSoon(), drawMeta(), note(text,
 * offerStop), settle(status). addDelta(seq, text) and takeSnapshot(seq, text) keep its text in
 * step with the server's numbered deltas (README.md, "Websocket protocol").
 */
(function (chat) {
  "use strict";

  var ERROR_TITLES = {
    quota_exceeded: "Usage limit reached",
    budget_exhausted: "Your team's monthly budget is used up",
    rate_limited: "The AI service is busy",
    upstream_unavailable: "The AI service is unavailable",
    upstream_interrupted: "The answer was interrupted",
    interrupted: "The portal stopped while answering",
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

  function fmtSeconds(ms) { return (ms / 1000).toFixed(2) + " s"; }
  function fmtInt(n) { return Number(n).toLocaleString("en-US"); }

  function srLabel(text) {
    var s = document.createElement("span");
    s.className = "visually-hidden";
    s.textContent = text;
    return s;
  }

  function filterLabel(f) {
    if (f.label) return f.label;
    var count = f.count || 1;
    var name = String(f.filter || "filter").replace(/_/g, " ");
    return name + " filter applied" + (count > 1 ? " (" + count + "×)" : "");
  }

  chat.answers = function (options) {
    var list = document.getElementById("messages");
    var empty = document.getElementById("empty-state");
    var byId = new Map();   // assistant message id -> Answer

    function hideEmpty() { if (empty) empty.hidden = true; }

    function question(text, id) {
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
      list.appendChild(art);
      return art;
    }

    function Answer(init) {
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
      var omitted = document.createElement("p");
      omitted.className = "msg-note msg-left-out";
      omitted.hidden = true;
      art.appendChild(omitted);
      var meta = document.createElement("div");
      meta.className = "msg-meta meta";
      meta.hidden = true;
      art.appendChild(body);
      art.appendChild(note);
      art.appendChild(meta);
      list.appendChild(art);
      this.id = init.id;
      this.el = art;
      this.body = body;
      this.noteEl = note;
      this.leftOutEl = omitted;
      this.meta = meta;
      this.text = init.content || "";
      this.status = init.status || "streaming";
      this.seq = init.seq === undefined ? 0 : init.seq;   // null: page-loaded, position unknown
      this.buffer = new Map();                             // seq -> text that came early
      this.model = init.model || "";
      this.finish = "";
      this.filters = [];
      this.usage = null;
      this.ttftMs = null;
      this.latencyMs = null;
      this.frame = 0;
      this.stopping = false;
    }

    Answer.prototype.render = function () {
      this.frame = 0;
      var streaming = this.status === "streaming";
      this.body.setAttribute("aria-busy", streaming ? "true" : "false");
      var frag = chat.markdown.render(this.text);
      var caret = null;
      if (streaming) {
        caret = document.createElement("span");
        caret.className = "caret";
        caret.setAttribute("aria-hidden", "true");
      }
      if (!this.text && streaming) {
        var p = document.createElement("p");
        p.className = "thinking";
        p.appendChild(caret);
        p.appendChild(srLabel("Waiting for the answer"));
        frag.appendChild(p);
        caret = null;
      } else if (!this.text.trim() && (this.status === "complete" || this.status === "cancelled")) {
        var e = document.createElement("p");
        e.className = "muted";
        e.textContent = this.status === "cancelled" ? "Stopped before any text arrived." : "The answer was empty.";
        frag.appendChild(e);
      }
      if (caret) chat.markdown.caretHost(frag).appendChild(caret);
      this.body.replaceChildren(frag);
      options.changed();
    };

    // While streaming, re-render at most once per animation frame.
    Answer.prototype.drawSoon = function () {
      if (this.frame) return;
      var self = this;
      this.frame = requestAnimationFrame(function () { self.render(); });
    };

    Answer.prototype.draw = function () {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.render();
    };

    // The answer has ended (or this page stopped following it): nothing held back is needed.
    Answer.prototype.settle = function (status) {
      this.status = status;
      this.buffer.clear();
      this.draw();
    };

    Answer.prototype.append = function (seq, text) {
      this.text += text;
      this.seq = seq;
    };

    // Deltas that arrived early (after a gap) can follow now.
    Answer.prototype.catchUp = function () {
      while (this.buffer.has(this.seq + 1)) {
        var next = this.seq + 1;
        this.append(next, this.buffer.get(next));
        this.buffer.delete(next);
      }
    };

    // One delta of the live stream. Returns "whole" when it carried the text on with nothing
    // held back (nothing is missing any more), "gap" when deltas before it are missing (the
    // socket dropped; the page asks to resume), and "" otherwise.
    Answer.prototype.addDelta = function (seq, text) {
      if (this.seq === null) {
        // Page-loaded answer: its position is unknown until the snapshot; keep what comes first.
        if (isFinite(seq)) this.buffer.set(seq, text);
        return "";
      }
      if (!isFinite(seq) || seq <= this.seq) return "";   // already have it
      if (seq !== this.seq + 1) {
        this.buffer.set(seq, text);
        return "gap";
      }
      var whole = !this.buffer.size;
      this.append(seq, text);
      this.catchUp();
      this.drawSoon();
      return whole ? "whole" : "";
    };

    // The text so far, up to seq; later deltas follow live. False when this page is already
    // further along (the snapshot is ignored).
    Answer.prototype.takeSnapshot = function (seq, text) {
      if (this.seq !== null && isFinite(seq) && seq < this.seq) return false;
      if (typeof text === "string") this.text = text;
      this.seq = isFinite(seq) ? seq : this.seq;
      var self = this;
      this.buffer.forEach(function (_, k) { if (k <= self.seq) self.buffer.delete(k); });
      this.catchUp();
      return true;
    };

    /* How the answer ended, under the names the server gives them in the done and error frames
     * and in a stored answer alike (Outcome.to_dict() in chat/completion.py). */
    Answer.prototype.setOutcome = function (facts) {
      if (facts.model) this.model = facts.model;
      this.finish = facts.finish_reason || "";
      if (Array.isArray(facts.filters)) this.filters = facts.filters;
      if (facts.usage) this.usage = facts.usage;
      this.ttftMs = facts.ttft_ms == null ? null : facts.ttft_ms;
      this.latencyMs = facts.latency_ms == null ? null : facts.latency_ms;
      if (facts.left_out) this.leftOut(facts.left_out);
    };

    // The line above an answer of a long conversation: what the model was not sent.
    Answer.prototype.leftOut = function (n) {
      n = Number(n) || 0;
      this.leftOutEl.textContent = n ? "The " + fmtInt(n) + " earliest message" + (n > 1 ? "s" : "") +
        " of this conversation " + (n > 1 ? "were" : "was") + " left out: with them it is longer than the model accepts." : "";
      this.leftOutEl.hidden = !n;
    };

    Answer.prototype.hasTokens = function () {
      return !!(this.usage && this.usage.output_tokens > 0);
    };

    Answer.prototype.drawMeta = function () {
      var parts = [];
      function add(text, cls, title) {
        var s = document.createElement("span");
        s.className = "meta-item" + (cls ? " " + cls : "");
        s.textContent = text;
        if (title) s.title = title;
        parts.push(s);
      }
      var u = this.usage;
      if (this.status === "cancelled") add("Stopped", "meta-stopped");
      if (this.finish === "length") add("Cut off at the max tokens limit", "meta-warn");
      if (this.model) add(this.model, "meta-model");
      if (u && u.output_tokens != null) {
        var est = u.source === "estimate";
        var title = "Input " + fmtInt(u.input_tokens || 0) + " tokens, output " + fmtInt(u.output_tokens) +
          " tokens" + (est ? " (estimated)" : " (reported by the AI service)");
        add((est ? "≈" : "") + fmtInt(u.output_tokens) + " tokens", "", title);
      }
      if (this.ttftMs != null) add("TTFT " + fmtSeconds(this.ttftMs), "", "Time to first token");
      if (this.latencyMs != null) add("total " + fmtSeconds(this.latencyMs), "", "Total time");
      (this.filters || []).forEach(function (f) {
        add(filterLabel(f), "meta-filter", "A safety filter changed this answer (" + (f.filter || "filter") + ")");
      });
      this.meta.replaceChildren();
      var metaList = document.createElement("span");
      metaList.className = "meta-list";
      parts.forEach(function (p) { metaList.appendChild(p); });
      this.meta.appendChild(metaList);
      if (this.text) {
        var copy = document.createElement("button");
        copy.type = "button";
        copy.className = "copy-btn meta-copy";
        copy.setAttribute("data-copy", "answer");
        copy.setAttribute("aria-label", "Copy answer as markdown");
        copy.textContent = "Copy";
        this.meta.appendChild(copy);
      }
      this.meta.hidden = false;
    };

    // The line under the answer ("Stopping…", "Reload to see the rest"), with a way to stop an
    // answer the page no longer follows when offerStop is set.
    Answer.prototype.note = function (text, offerStop) {
      var self = this;
      this.noteEl.replaceChildren();
      if (text) this.noteEl.appendChild(document.createTextNode(text));
      if (text && offerStop) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "link-btn";
        b.textContent = "Stop generating";
        b.addEventListener("click", function () { options.stopClicked(self); });
        this.noteEl.appendChild(document.createTextNode(" "));
        this.noteEl.appendChild(b);
      }
      this.noteEl.hidden = !text;
    };

    function answer(init) {
      var m = new Answer(init);
      if (m.id != null) byId.set(m.id, m);
      return m;
    }

    // An error card inside the conversation, in the words of the error frame.
    function errorCard(opts) {
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
        a.href = (options.loginUrl || "/accounts/login/") + "?next=" + encodeURIComponent(location.pathname);
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
      if (opts.continueAnswer) {
        // The answer has text worth keeping: ask the model to go on from it rather than repeat it.
        var more = document.createElement("button");
        more.type = "button";
        more.className = "btn btn-small btn-primary retry-btn continue-btn";
        more.textContent = "Continue";
        more.title = "Ask the model to go on from where this answer stopped";
        more.addEventListener("click", function () { opts.continueAnswer(); });
        actions.appendChild(more);
      }
      if (actions.childNodes.length) card.appendChild(actions);
      var anchor = opts.after;
      if (anchor && anchor.isConnected) anchor.appendChild(card);
      else list.appendChild(card);
      if (Number(opts.retryAfter) > 0) {
        var wait = document.createElement("p");
        wait.className = "error-wait";
        wait.setAttribute("aria-live", "off");
        card.insertBefore(wait, detail.nextSibling);
        sendAgainCountdown(wait, Number(opts.retryAfter));
      }
      if (btn && Number(opts.retryAfter) > 0) startCountdown(btn, Number(opts.retryAfter));
      options.changed(true);
      return card;
    }

    function fmtWait(s) {
      if (s < 120) return s + " s";
      if (s < 7200) return Math.round(s / 60) + " min";
      if (s < 172800) return Math.round(s / 3600) + " h";
      return Math.round(s / 86400) + " days";
    }

    // "You can send again in 12 s" under a refusal, counting down to "You can send again now."
    function sendAgainCountdown(line, wait) {
      var until = Date.now() + wait * 1000;
      var timer = 0;
      function tick() {
        var left = Math.ceil((until - Date.now()) / 1000);
        if (left <= 0 || !line.isConnected) {
          line.textContent = "You can send again now.";
          clearInterval(timer);
          return;
        }
        line.textContent = "You can send again in " + fmtWait(left) + ".";
      }
      timer = setInterval(tick, 1000);
      tick();
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
      list.querySelectorAll(".retry-btn").forEach(function (b) { b.remove(); });
    }

    // The markdown of the answer in this <article> (what its Copy button copies).
    function textOf(art) {
      var key = art && art.dataset.message;
      var m = art && byId.get(isNaN(Number(key)) ? key : Number(key));
      return m ? m.text : "";
    }

    return {
      question: question,
      answer: answer,
      find: function (id) { return byId.get(id); },
      forEach: function (fn) { byId.forEach(fn); },
      errorCard: errorCard,
      retireRetryButtons: retireRetryButtons,
      hideEmpty: hideEmpty,
      textOf: textOf,
    };
  };
})(window.GatewayChat = window.GatewayChat || {});
