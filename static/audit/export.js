// The compliance lists' CSV export with its progress (templates/admin/audit/change_list_export.html).
// The file is fetched here and its rows counted as they arrive, against the total the server
// counted at the start (the X-Export-Rows header); then it is saved. Without this script (or
// without streams) the link downloads the file directly.
"use strict";

(() => {
  const numbers = new Intl.NumberFormat();

  function megabytes(bytes) {
    return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB";
  }

  function filenameOf(response) {
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    return match ? match[1] : "export.csv";
  }

  async function exportSelection(link, status) {
    status.hidden = false;
    status.classList.remove("failed");
    status.textContent = "Starting the export…";
    link.setAttribute("aria-disabled", "true");
    try {
      const response = await fetch(link.href, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`the server answered ${response.status} ${response.statusText}`);
      const total = Number(response.headers.get("X-Export-Rows") || 0);
      const reader = response.body.getReader();
      const parts = [];
      let bytes = 0;
      let lines = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        bytes += value.length;
        for (let at = value.indexOf(10); at !== -1; at = value.indexOf(10, at + 1)) lines++;
        const rows = Math.max(0, lines - 1); // the first line is the header
        const share = total ? ` of ${numbers.format(total)} (${Math.floor((100 * rows) / total)} %)` : "";
        status.textContent = `Exporting: ${numbers.format(rows)} rows${share} received, ${megabytes(bytes)}…`;
      }
      const rows = Math.max(0, lines - 1);
      const name = filenameOf(response);
      const url = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
      const save = document.createElement("a");
      save.href = url;
      save.download = name;
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      status.textContent = `Done: ${numbers.format(rows)} rows (${megabytes(bytes)}) saved as ${name}.`;
      status.dataset.done = "true";
    } catch (error) {
      status.classList.add("failed");
      status.textContent = `The export failed: ${error.message}. Try again, or narrow the selection with the filters.`;
    } finally {
      link.removeAttribute("aria-disabled");
    }
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-export-status]");
    if (!link || !window.ReadableStream || !window.fetch) return;
    const status = document.getElementById(link.dataset.exportStatus);
    if (!status) return;
    event.preventDefault();
    if (link.getAttribute("aria-disabled") !== "true") exportSelection(link, status);
  });
})();
