// squadkit's page: ask the served model about a passage, show the answer highlighted in it.
// No build step, no dependencies: the DOM API and fetch.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const button = $("ask");
  const result = $("result");
  const verdict = $("verdict");
  const passage = $("passage");
  const others = $("others");
  const othersList = $("others-list");
  const errorBox = $("error");

  function formatScore(score) {
    return (100 * score).toFixed(1) + "%";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  // The passage as text nodes, with the answer span wrapped in <mark>; never innerHTML.
  function renderPassage(context, answer) {
    passage.replaceChildren();
    if (!answer || answer.answer === "" || answer.end <= answer.start) {
      passage.append(document.createTextNode(context));
      return;
    }
    // The server's offsets count characters (code points); JavaScript strings index UTF-16 units,
    // so slice an array of code points, or an emoji before the answer would shift the highlight.
    const chars = Array.from(context);
    const mark = document.createElement("mark");
    mark.id = "answer-span";
    mark.textContent = chars.slice(answer.start, answer.end).join("");
    passage.append(
      document.createTextNode(chars.slice(0, answer.start).join("")),
      mark,
      document.createTextNode(chars.slice(answer.end).join("")),
    );
  }

  function renderVerdict(best) {
    verdict.replaceChildren();
    const noAnswer = !best || best.answer === "";
    verdict.className = "verdict " + (noAnswer ? "no-answer" : "has-answer");
    verdict.dataset.kind = noAnswer ? "no-answer" : "answer";
    const label = document.createElement("span");
    label.className = "label";
    const text = document.createElement("strong");
    text.id = "answer-text";
    if (noAnswer) {
      label.textContent = "No answer";
      text.textContent = "The passage does not answer this question.";
    } else {
      label.textContent = "Answer";
      text.textContent = best.answer;
    }
    const score = document.createElement("span");
    score.id = "answer-score";
    score.className = "score";
    score.textContent = best ? "score " + formatScore(best.score) : "";
    score.title = best ? String(best.score) : "";
    verdict.append(label, text, score);
    if (best && typeof best.confidence === "number") {  // a calibrated model: P(exact match), or P(no answer) for ""
      const confidence = document.createElement("span");
      confidence.id = "answer-confidence";
      confidence.className = "score";
      confidence.textContent = " confidence " + formatScore(best.confidence);
      confidence.title = String(best.confidence);
      verdict.append(confidence);
    }
  }

  function renderOthers(rest) {
    othersList.replaceChildren();
    others.hidden = rest.length === 0;
    for (const a of rest) {
      const li = document.createElement("li");
      li.textContent = (a.answer === "" ? "(no answer)" : a.answer) + " — " + formatScore(a.score);
      othersList.append(li);
    }
  }

  function describeError(status, body) {
    if (body && typeof body.error === "string") return body.error;
    if (body && typeof body.detail === "string") return body.detail;
    return "The server answered " + status + ".";
  }

  async function ask(event) {
    event.preventDefault();
    errorBox.hidden = true;
    const context = $("context").value;
    const question = $("question").value;
    if (!context.trim()) { showError("Paste a passage first."); $("context").focus(); return; }
    if (!question.trim()) { showError("Type a question first."); $("question").focus(); return; }
    const topK = parseInt($("top-k").value, 10);
    const payload = {
      question: question,
      context: context,
      top_k: topK,
      handle_impossible_answer: $("impossible").checked,
    };
    button.disabled = true;
    button.textContent = "Asking…";
    result.setAttribute("aria-busy", "true");
    try {
      const response = await fetch("/v1/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      if (!response.ok) { showError(describeError(response.status, body)); return; }
      const answers = Array.isArray(body) ? body : [body];
      const best = answers[0];
      renderVerdict(best);
      renderPassage(context, best);
      renderOthers(answers.slice(1));
      result.hidden = false;
    } catch (err) {
      showError("Could not reach the server: " + err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Ask";
      result.setAttribute("aria-busy", "false");
    }
  }

  async function loadModelInfo() {
    const info = $("model-info");
    try {
      const response = await fetch("/v1/model");
      const body = await response.json();
      const how = [body.backend, body.model_file, body.device].filter(Boolean).join(", ");
      info.textContent = "Model: " + body.model + " (" + how + ")";
    } catch (_) {
      info.textContent = "";
    }
  }

  form.addEventListener("submit", ask);
  // Enter in the passage box inserts a newline; Ctrl/Cmd+Enter asks from anywhere in the form.
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  loadModelInfo();
})();
