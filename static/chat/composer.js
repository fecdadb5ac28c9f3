/*
 * The composer: the textarea (it grows with its text; Enter sends, Shift+Enter makes a new line,
 * Escape stops), the one button that is Send while idle and Stop while an answer is on its way,
 * the hint line under it, and the model, temperature and max tokens settings (remembered in this
 * browser, clamped to what the server allows).
 *
 *   var composer = GatewayChat.composer({defaults, models, busy(), stopping(), send(text), stop(),
 *                                        closeSidebar()})
 *     send(text) -> true when the question went (the box is then emptied)
 *     closeSidebar() -> true when Escape closed the phone sidebar (Escape does nothing more then)
 *   composer.settings()        -> {model, temperature, max_tokens}, clamped, for a send frame
 *   composer.checkLength(text) -> false (and says so in the hint) when the text is too long
 *   composer.update()          -> the button follows busy()/stopping() and the text
 *   composer.hint(text, sticky), composer.restore(text), composer.discard(text), composer.focus()
 */
(function (chat) {
  "use strict";

  var STORE_KEY = "gatewayPortal.settings";

  function fmtInt(n) { return Number(n).toLocaleString("en-US"); }

  chat.composer = function (options) {
    var defaults = options.defaults;
    var MAX_TOKENS_LIMIT = Number(defaults.max_tokens_limit) || 4096;
    var el = {
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
    };

    function update() {
      var stopMode = options.busy();
      el.button.classList.toggle("is-stop", stopMode);
      el.button.setAttribute("aria-label", stopMode ? "Stop the answer" : "Send");
      el.buttonText.textContent = stopMode ? "Stop" : "Send";
      el.button.disabled = stopMode ? options.stopping() : !el.input.value.trim();
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
      if (s.model && (options.models || []).indexOf(s.model) !== -1) el.model.value = s.model;
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

    // What a send frame carries; the fields show the clamped values that went.
    function settings() {
      el.temperature.value = clampTemperature(el.temperature.value);
      el.maxTokens.value = clampMaxTokens(el.maxTokens.value);
      showSettingsValues();
      return {
        model: el.model.value,
        temperature: Number(el.temperature.value),
        max_tokens: Number(el.maxTokens.value),
      };
    }

    function checkLength(text) {
      var limit = Number(defaults.max_message_chars) || 0;
      if (limit && text.length > limit) {
        hint("This message is " + fmtInt(text.length) + " characters; the limit is " + fmtInt(limit) +
          ". Shorten it and send again.", true);
        return false;
      }
      return true;
    }

    // A question that was not sent after all comes back into the box, without losing what the
    // person has typed since.
    function restore(text) {
      if (!el.input.value.trim()) el.input.value = text;
      else if (el.input.value.indexOf(text) === -1) el.input.value = text + "\n\n" + el.input.value;
      autoGrow();
      update();
    }

    // Retry sends the last question again: do not leave a copy of it in the box.
    function discard(text) {
      if (el.input.value.trim() === text) { el.input.value = ""; autoGrow(); }
    }

    el.form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (options.busy()) options.stop();
      else if (options.send(el.input.value)) {
        el.input.value = "";
        autoGrow();
        update();
      }
      el.input.focus();
    });
    el.input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        if (!options.busy()) el.form.requestSubmit ? el.form.requestSubmit() : el.button.click();
      }
    });
    el.input.addEventListener("input", function () { autoGrow(); update(); });
    document.addEventListener("keydown", function (ev) {
      if (ev.key !== "Escape") return;
      if (options.closeSidebar()) return;
      if (el.settings.open) { el.settings.open = false; el.input.focus(); return; }
      if (options.busy()) { ev.preventDefault(); options.stop(); }
    });
    // Close the settings panel when clicking elsewhere.
    document.addEventListener("click", function (ev) {
      if (el.settings.open && !el.settings.contains(ev.target)) el.settings.open = false;
    });

    autoGrow();

    return {
      settings: settings,
      checkLength: checkLength,
      update: update,
      hint: hint,
      restore: restore,
      discard: discard,
      focus: function () { el.input.focus(); },
    };
  };
})(window.GatewayChat = window.GatewayChat || {});
