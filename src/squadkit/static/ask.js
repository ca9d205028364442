// The "Documents" tab: ask the server's document index (POST /v1/ask), show the best answer
// highlighted in its passage with the document's name. Shown only when GET /v1/index answers.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const tabs = $("tabs");
  const passageTab = $("tab-passage");
  const docsTab = $("tab-documents");
  const panel = $("docs-panel");
  const passageViews = ["ask-form", "result", "error"];
  let saved = {};

  function select(documents) {
    passageTab.setAttribute("aria-selected", String(!documents));
    docsTab.setAttribute("aria-selected", String(documents));
    panel.hidden = !documents;
    for (const id of passageViews) {
      if (documents) { saved[id] = $(id).hidden; $(id).hidden = true; }
      else if (id in saved) { $(id).hidden = saved[id]; }
    }
    (documents ? $("docs-question") : $("question")).focus();
  }

  function showError(message) {
    $("docs-error").textContent = message;
    $("docs-error").hidden = false;
  }

  // The passage as text nodes with the span in <mark>; never innerHTML. The server's offsets
  // count code points (Python), JavaScript strings count UTF-16 units: slice an array of code points.
  function renderPassage(best, rejected) {
    const box = $("docs-passage");
    box.replaceChildren();
    const chars = Array.from(best.passage);
    const a = best.start - best.passage_start;
    const b = best.end - best.passage_start;
    const mark = document.createElement("mark");
    mark.id = "docs-answer-span";
    if (rejected) mark.className = "rejected";
    mark.textContent = chars.slice(a, b).join("");
    box.append(document.createTextNode(chars.slice(0, a).join("")), mark,
               document.createTextNode(chars.slice(b).join("")));
  }

  function renderVerdict(best, noAnswer) {
    const verdict = $("docs-verdict");
    verdict.replaceChildren();
    verdict.className = "verdict " + (noAnswer ? "no-answer" : "has-answer");
    verdict.dataset.kind = noAnswer ? "no-answer" : "answer";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = noAnswer ? "No answer" : "Answer";
    const text = document.createElement("strong");
    text.id = "docs-answer-text";
    text.textContent = noAnswer ? "No document answers this question." : best.answer;
    verdict.append(label, text);
  }

  // An answer: where it is, highlighted. An abstention: said first, then (if the reader found any
  // span) the best one it rejected, labelled as such and marked apart, never shown as the answer.
  function render(body) {
    const best = body.answers[0];
    const noAnswer = body.no_answer || !best;
    renderVerdict(best, noAnswer);
    $("docs-where").hidden = !best;
    if (best) {
      $("docs-where-kind").textContent = noAnswer
        ? "Best span the reader found, and rejected: “" + best.answer + "”, in"
        : "Found in";
      $("docs-document").textContent = best.document + (best.page ? ", page " + best.page : "");
      $("docs-offsets").textContent = best.start + "–" + best.end;
      renderPassage(best, noAnswer);
    } else {
      $("docs-passage").replaceChildren();
    }
    const list = $("docs-others-list");
    list.replaceChildren();
    const rest = body.answers.slice(1);
    $("docs-others").hidden = rest.length === 0;
    $("docs-others").querySelector("h3").textContent = noAnswer ? "Other rejected spans" : "Other candidates";
    for (const a of rest) {
      const li = document.createElement("li");
      li.textContent = a.answer + " — " + a.document + (a.page ? ", page " + a.page : "");
      list.append(li);
    }
    $("docs-result").hidden = false;
  }

  async function ask(event) {
    event.preventDefault();
    $("docs-error").hidden = true;
    const question = $("docs-question").value;
    if (!question.trim()) { showError("Type a question first."); return; }
    const button = $("docs-ask");
    button.disabled = true;
    try {
      const response = await fetch("/v1/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question: question, k: parseInt($("docs-k").value, 10), top_k: 3 }),
      });
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      if (!response.ok) {
        showError((body && typeof body.error === "string" && body.error) || ("The server answered " + response.status + "."));
        return;
      }
      render(body);
    } catch (err) {
      showError("Could not reach the server: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  async function init() {
    try {
      const response = await fetch("/v1/index");
      if (!response.ok) return; // no index served: the page stays as it was
      const info = await response.json();
      $("docs-info").textContent = "Index: " + info.documents + " documents, " + info.passages + " passages";
      tabs.hidden = false;
    } catch (_) { /* no tab */ }
  }

  passageTab.addEventListener("click", () => select(false));
  docsTab.addEventListener("click", () => select(true));
  $("docs-form").addEventListener("submit", ask);
  init();
})();
