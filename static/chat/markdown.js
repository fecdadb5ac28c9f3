/*
 * Model output is untrusted. This is the one renderer for both the live stream and the stored
 * conversation, so what a person sees does not change on reload (docs/ARCHITECTURE.md, "One chat
 * message, end to end"): markdown-it (raw HTML off) -> DOMPurify -> DOM fragment, code highlighted
 * by highlight.js. The Content-Security-Policy (gateway_portal/security.py) is the second wall.
 * Also the Copy buttons of code blocks and of whole answers.
 *
 *   GatewayChat.markdown.render(text)        -> DocumentFragment, sanitised and decorated
 *   GatewayChat.markdown.caretHost(fragment) -> the element the streaming caret goes into
 *   GatewayChat.markdown.copyButtons(container, answerText)
 *       Copy for every [data-copy] button inside container; answerText(article) gives the
 *       markdown of the answer a "Copy answer" button belongs to.
 */
(function (chat) {
  "use strict";

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

  function render(text) {
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

  function copyButtons(container, answerText) {
    container.addEventListener("click", function (ev) {
      var btn = ev.target.closest && ev.target.closest("[data-copy]");
      if (!btn) return;
      var text = "";
      if (btn.getAttribute("data-copy") === "code") {
        var code = btn.closest(".code-block").querySelector("code");
        text = code ? code.textContent : "";
      } else {
        text = answerText(btn.closest(".msg"));
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
  }

  chat.markdown = { render: render, caretHost: caretHost, copyButtons: copyButtons };
})(window.GatewayChat = window.GatewayChat || {});
