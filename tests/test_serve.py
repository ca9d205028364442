"""squadkit.serve on a real uvicorn server on a loopback port, driven by a real HTTP client.

Most tests run the server in a thread (squadkit.serve.serve_in_thread) so they can look at the
batcher; the SIGTERM and CLI tests run ``squadkit serve`` as a subprocess. A gated pipeline
(answers only when the test opens its gate) makes the queue, timeout and health-while-busy
tests deterministic rather than timing-dependent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from squadkit.pipeline import QuestionAnswerer  # noqa: E402
from squadkit.serve import ServeSettings, create_app, serve_in_thread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

QUIET = dict(access_log=False, log_level="warning")

EXAMPLES = [
    ("where is paris", "paris is the capital of france , in the north of the country ."),
    ("who was the king", "the old king was born in rome and the queen was born in london ."),
    ("when was the city found", "the city was found in the first year of the war , by the river ."),
    ("what is red", "red is a colour . blue is a colour too , and green is the third ."),
]


@pytest.fixture(scope="module")
def qa(tiny_bert) -> QuestionAnswerer:
    return QuestionAnswerer(str(tiny_bert), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def server(qa):
    """One shared server with the default limits (micro-batches of 16, 20 ms wait)."""
    app = create_app(qa, ServeSettings(max_wait_ms=20, **QUIET))
    with serve_in_thread(app) as url:
        yield url, app


class GatedQA:
    """The pipeline, held at a gate: ``entered`` is set when the worker thread calls it."""

    def __init__(self, qa: QuestionAnswerer) -> None:
        self.qa = qa
        self.model = qa.model
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0

    def answer_pairs(self, *args, **kwargs):  # pragma: no cover - serve calls __call__
        return self.qa.answer_pairs(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.qa(*args, **kwargs)


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30, **kwargs)


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def assert_same_answers(got, expected) -> None:
    """Equal to the pipeline: text and offsets exactly, scores to float32 noise (padding in a batch)."""
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same_answers(g, e)
        return
    assert {k: got[k] for k in ("answer", "start", "end")} == {k: expected[k] for k in ("answer", "start", "end")}
    assert got["score"] == pytest.approx(expected["score"], rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------------------------------
# answers equal the pipeline's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {},
    {"top_k": 3},
    {"handle_impossible_answer": True},
    {"top_k": 2, "handle_impossible_answer": True, "max_answer_len": 3},
])
def test_answer_equals_pipeline(server, qa, options):
    url, _ = server
    for question, context in EXAMPLES:
        response = post(url, "/v1/answer", {"question": question, "context": context, **options})
        assert response.status_code == 200, response.text
        assert_same_answers(response.json(), qa(question=question, context=context, **options))


def test_batch_equals_pipeline_per_item(server, qa):
    url, _ = server
    settings = [{}, {"top_k": 3}, {"handle_impossible_answer": True}, {"max_answer_len": 2}]
    inputs = [{"question": q, "context": c, **s} for (q, c), s in zip(EXAMPLES, settings)]
    response = post(url, "/v1/answer/batch", {"inputs": inputs})
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert len(answers) == len(inputs)
    for item, got in zip(inputs, answers):
        assert_same_answers(got, qa(**item))


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(qa):
    app = create_app(qa, ServeSettings(max_batch_size=16, max_wait_ms=200, **QUIET))
    payloads = [{"question": q, "context": c, **opt} for q, c in EXAMPLES
                for opt in ({}, {"top_k": 2}, {"handle_impossible_answer": True})]

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/answer", json=p) for p in payloads))

    with serve_in_thread(app) as url:
        responses = asyncio.run(fire(url))
    batcher = app.state.squadkit.batcher
    assert [r.status_code for r in responses] == [200] * len(payloads)
    for payload, response in zip(payloads, responses):
        assert_same_answers(response.json(), qa(**payload))
    assert batcher.pairs_answered == len(payloads)
    assert batcher.batches_run < len(payloads)  # some of them were answered together


# ---------------------------------------------------------------------------------------------
# health, model, docs, page
# ---------------------------------------------------------------------------------------------


def test_health_ready_model_docs_and_page(server):
    url, _ = server
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = httpx.get(url + "/v1/model").json()
    assert info["backend"] == "torch" and info["device"] == "cpu" and info["ready"] is True
    assert info["model_file"] is None and info["precision"] == "fp32"  # a torch checkpoint: its folder is "model"
    assert info["model"].endswith("tiny-bert0") or "tiny-bert" in info["model"]
    assert info["settings"]["max_batch_size"] == 16 and info["settings"]["max_wait_ms"] == 20
    schema = httpx.get(url + "/openapi.json").json()
    assert {"/v1/answer", "/v1/answer/batch", "/healthz", "/readyz", "/v1/model"} <= set(schema["paths"])
    assert httpx.get(url + "/docs").status_code == 200
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="question"' in page.text and 'for="context"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(url + asset).status_code == 200


def test_health_answers_while_the_model_works(qa):
    gated = GatedQA(qa)
    app = create_app(gated, ServeSettings(**QUIET))
    with serve_in_thread(app) as url:
        result = {}
        worker = threading.Thread(target=lambda: result.update(r=post(url, "/v1/answer", {
            "question": EXAMPLES[0][0], "context": EXAMPLES[0][1]})))
        worker.start()
        assert gated.entered.wait(10)
        # the model is busy on the worker thread: the event loop still answers
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        gated.gate.set()
        worker.join(30)
    assert result["r"].status_code == 200


def test_model_given_by_name_loads_in_background(tiny_bert):
    app = create_app(str(tiny_bert), ServeSettings(backend="torch", **QUIET))
    with serve_in_thread(app) as url:
        assert httpx.get(url + "/healthz").status_code == 200
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, 60)
        assert post(url, "/v1/answer", {"question": "a", "context": "the king"}).status_code == 200


def test_model_that_fails_to_load_is_reported_not_ready(tmp_path):
    app = create_app(str(tmp_path / "missing"), ServeSettings(backend="torch", **QUIET))
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(url + "/readyz").json()["status"] == "failed", 60)
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503 and "missing" in ready.json()["error"]
        response = post(url, "/v1/answer", {"question": "a", "context": "b"})
        assert response.status_code == 503 and "failed to load" in response.json()["detail"]
        assert httpx.get(url + "/healthz").status_code == 200


# ---------------------------------------------------------------------------------------------
# validation and limits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"question": "", "context": "the king"}, "question"),
    ({"question": "who", "context": ""}, "context"),
    ({"question": "   ", "context": "the king"}, "question"),
    ({"question": "who", "context": " \n\t"}, "context"),
    ({"context": "the king"}, "question"),
    ({"question": "who"}, "context"),
    ({"question": 3, "context": "the king"}, "question"),
    ({"question": "who", "context": ["the", "king"]}, "context"),
    ({"question": "who", "context": "the king", "top_k": 0}, "top_k"),
    ({"question": "who", "context": "the king", "top_k": "2"}, "top_k"),
    ({"question": "who", "context": "the king", "top_k": True}, "top_k"),
    ({"question": "who", "context": "the king", "top_k": 21}, "top_k"),
    ({"question": "who", "context": "the king", "max_answer_len": 0}, "max_answer_len"),
    ({"question": "who", "context": "the king", "handle_impossible_answer": "yes"}, "handle_impossible_answer"),
    ({"question": "who", "context": "the king", "max_answer_length": 513}, "max_answer_length"),
    ({"question": "who", "context": "the king", "doc_stride": 10_000}, "doc_stride"),
    ({"question": "who", "context": "the king", "max_seq_length": 513}, "max_seq_length"),
    ({"question": "who", "context": "the king", "max_query_length": 0}, "max_query_length"),
    ({"question": "who", "context": "the king", "null_score_diff_threshold": "high"}, "null_score_diff_threshold"),
    ({"question": "who", "context": "the king", "min_confidence": 0.5}, "min_confidence"),  # not calibrated
    ({"question": "who", "context": "the king", "max_seq_len": 128}, "max_seq_len"),  # one name per setting
    ([{"question": "who", "context": "the king"}], "body"),
])
def test_invalid_requests_are_422_naming_the_field(server, body, field):
    url, _ = server
    response = post(url, "/v1/answer", body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert field in [e["field"] for e in payload["detail"]]
    assert payload["error"].startswith(payload["detail"][0]["field"])


def test_a_body_that_is_not_json_text_is_400(server):
    """As the README's table and the schema say: 400 for a body that cannot be read as JSON text (422 is
    for JSON that breaks the schema)."""
    url, _ = server
    response = httpx.post(url + "/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"].startswith("body:")
    assert response.json()["detail"][0]["field"] == "body"


def test_batch_item_errors_name_the_item(server):
    url, _ = server
    inputs = [{"question": "who", "context": "the king"}, {"question": "", "context": "the king"}]
    response = post(url, "/v1/answer/batch", {"inputs": inputs})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "inputs.1.question"
    assert post(url, "/v1/answer/batch", {"inputs": []}).status_code == 422


@pytest.fixture(scope="module")
def small_limits(qa):
    settings = ServeSettings(max_context_chars=100, max_question_chars=20, max_batch_items=3, max_queue=8,
                             max_body_bytes=2_000, **QUIET)
    with serve_in_thread(create_app(qa, settings)) as url:
        yield url


def test_context_too_long_is_422_naming_field_and_limit(small_limits):
    response = post(small_limits, "/v1/answer", {"question": "who", "context": "king " * 21})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("context:") and "100" in error
    assert "input" not in response.json()["detail"][0]  # the over-long text is not echoed back
    assert post(small_limits, "/v1/answer", {"question": "who", "context": "k" * 100}).status_code == 200


def test_question_too_long_is_422(small_limits):
    response = post(small_limits, "/v1/answer", {"question": "w" * 21, "context": "the king"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("question:") and "20" in response.json()["error"]


def test_batch_too_long_is_422_naming_field_and_limit(small_limits):
    inputs = [{"question": "who", "context": "the king"}] * 4
    response = post(small_limits, "/v1/answer/batch", {"inputs": inputs})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("inputs:") and "3" in error
    assert post(small_limits, "/v1/answer/batch", {"inputs": inputs[:3]}).status_code == 200


def test_body_too_large_is_413(small_limits):
    big = {"question": "who", "context": "x" * 5_000}
    response = post(small_limits, "/v1/answer", big)
    assert response.status_code == 413
    assert "2000" in response.json()["detail"]


def test_streamed_body_too_large_is_413(small_limits):
    """No Content-Length (chunked upload): the limit is counted as the body arrives."""

    def chunks():
        yield b'{"question": "who", "context": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    response = httpx.post(small_limits + "/v1/answer", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_request_timeout_is_504(qa):
    gated = GatedQA(qa)
    app = create_app(gated, ServeSettings(request_timeout_s=0.3, **QUIET))
    with serve_in_thread(app) as url:
        response = post(url, "/v1/answer", {"question": "who", "context": "the king"})
        assert response.status_code == 504
        assert "0.3" in response.json()["detail"]
        gated.gate.set()
        assert post(url, "/v1/answer", {"question": "who", "context": "the king"}).status_code == 200


def test_full_queue_is_503_with_retry_after(qa):
    gated = GatedQA(qa)
    settings = ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2, max_batch_items=2, retry_after_s=2,
                             **QUIET)
    app = create_app(gated, settings)
    body = {"question": "who", "context": "the king"}
    with serve_in_thread(app) as url:
        results: list[httpx.Response] = []
        first = threading.Thread(target=lambda: results.append(post(url, "/v1/answer", body)))
        first.start()
        assert gated.entered.wait(10)  # one pair is in the worker, held at the gate
        queued = threading.Thread(target=lambda: results.append(post(url, "/v1/answer/batch", {"inputs": [body] * 2})))
        queued.start()
        wait_until(lambda: app.state.squadkit.batcher.queued == 2)  # the queue is full now
        refused = post(url, "/v1/answer", body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        assert "queue is full" in refused.json()["detail"]
        gated.gate.set()
        first.join(30)
        queued.join(30)
        assert sorted(r.status_code for r in results) == [200, 200]
        assert post(url, "/v1/answer", body).status_code == 200  # room again


def test_ask_goes_through_the_same_admission_as_answer(qa, docs_index):
    """/v1/ask shares the answer routes' queue (503 + Retry-After when full), timeout (504) and worker."""
    gated = GatedQA(qa)
    settings = ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2, max_batch_items=2, retry_after_s=3,
                             **QUIET)
    app = create_app(gated, settings, index=docs_index)
    body = {"question": "who", "context": "the king"}
    question = {"question": "where was the queen born", "k": 3}
    with serve_in_thread(app) as url:
        results: list[httpx.Response] = []
        first = threading.Thread(target=lambda: results.append(post(url, "/v1/answer", body)))
        first.start()
        assert gated.entered.wait(10)  # the worker is busy, held at the gate
        asked = threading.Thread(target=lambda: results.append(post(url, "/v1/ask", question)))
        asked.start()
        queued = threading.Thread(target=lambda: results.append(post(url, "/v1/answer", body)))
        queued.start()
        wait_until(lambda: app.state.squadkit.batcher.queued == 2)  # the ask job and a pair: full
        for path, payload in (("/v1/ask", question), ("/v1/answer", body)):
            refused = post(url, path, payload)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "3", path
            assert "queue is full" in refused.json()["error"] and refused.json()["detail"]
        gated.gate.set()
        for thread in (first, asked, queued):
            thread.join(30)
        assert sorted(r.status_code for r in results) == [200, 200, 200]
        assert app.state.squadkit.batcher.jobs_run == 1  # the question over the documents ran on the worker
        assert post(url, "/v1/ask", question).status_code == 200  # room again


def test_ask_times_out_like_answer(qa, docs_index):
    gated = GatedQA(qa)
    app = create_app(gated, ServeSettings(request_timeout_s=0.3, max_wait_ms=0, **QUIET), index=docs_index)
    with serve_in_thread(app) as url:
        blocker = threading.Thread(target=lambda: post(url, "/v1/answer", {"question": "who", "context": "the king"}))
        blocker.start()
        assert gated.entered.wait(10)
        response = post(url, "/v1/ask", {"question": "where was the queen born"})
        assert response.status_code == 504 and "0.3" in response.json()["error"]
        gated.gate.set()
        blocker.join(30)


def test_every_error_has_the_same_shape_and_is_in_the_schema(small_limits):
    garbled = httpx.post(small_limits + "/v1/answer", content=b'{"question": "\xff", "context": "a"}',
                         headers={"content-type": "application/json"})
    too_large = post(small_limits, "/v1/answer", {"question": "who", "context": "x" * 5_000})
    invalid = post(small_limits, "/v1/answer", {"question": "who"})
    no_index = post(small_limits, "/v1/ask", {"question": "who"})
    wrong_method = httpx.delete(small_limits + "/v1/answer")
    for response, status in ((garbled, 400), (too_large, 413), (invalid, 422), (no_index, 404), (wrong_method, 405)):
        body = response.json()
        assert response.status_code == status and set(body) == {"error", "detail"}, (status, body)
        assert isinstance(body["error"], str) and body["error"]
    assert garbled.json()["error"].startswith("body:")
    uncalibrated = post(small_limits, "/v1/answer", {"question": "who", "context": "a", "min_confidence": 0.5})
    assert uncalibrated.status_code == 422 and "not calibrated" in uncalibrated.json()["error"]
    assert "--index" in no_index.json()["error"] and wrong_method.headers["allow"] == "POST"
    schema = httpx.get(small_limits + "/openapi.json").json()
    for path in ("/v1/answer", "/v1/answer/batch"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "422", "500", "503", "504"} <= set(responses)
        assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        assert "Retry-After" in responses["503"]["headers"]


def test_requests_take_what_answer_takes_by_the_canonical_names(server, qa):
    url, _ = server
    question, context = EXAMPLES[1]
    options = {"null_score_diff_threshold": -1e9, "handle_impossible_answer": True, "max_answer_length": 3,
               "max_seq_length": 256, "doc_stride": 64, "max_query_length": 16, "top_k": 2}
    response = post(url, "/v1/answer", {"question": question, "context": context, **options})
    assert response.status_code == 200, response.text
    expected = qa(question=question, context=context, null_score_diff_threshold=-1e9, handle_impossible_answer=True,
                  max_answer_len=3, max_seq_len=256, doc_stride=64, max_question_len=16, top_k=2)
    assert_same_answers(response.json(), expected)
    assert response.json()[0]["answer"] == ""  # the threshold made the empty answer win
    # transformers' name for the answer length is still accepted
    old = post(url, "/v1/answer", {"question": question, "context": context, "max_answer_len": 3, "top_k": 2})
    new = post(url, "/v1/answer", {"question": question, "context": context, "max_answer_length": 3, "top_k": 2})
    assert old.json() == new.json()


def test_request_options_are_one_hashable_value_and_reach_the_pipeline_by_its_names():
    import dataclasses

    from squadkit.serve_settings import RequestOptions
    from squadkit.settings import names_for

    a, b = RequestOptions(top_k=2, max_seq_length=256), RequestOptions(top_k=2, max_seq_length=256)
    assert a == b and hash(a) == hash(b) and len({a, b, RequestOptions()}) == 2
    # a request field is the pipeline's keyword is the setting's one name (settings.py)
    assert set(dataclasses.asdict(a)) <= set(names_for("pipeline"))


def test_blank_means_blank_to_python_and_to_the_schemas_regex_dialect():
    import re

    from squadkit.http_contract import NOT_BLANK, not_blank

    for char in [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\ufeff"]:
        with pytest.raises(ValueError):
            not_blank(char * 2)
        assert not re.search(NOT_BLANK, char)
    assert not_blank(" \x12 ") == " \x12 " and not_blank("\u200b") == "\u200b"


class FailingQA:
    """A pipeline that fails: with bad input (SquadkitError) for one question, a crash for another."""

    model = None

    def answer_pairs(self, *args, **kwargs):  # pragma: no cover - serve calls __call__
        raise AssertionError

    def __call__(self, inputs, **kwargs):
        from squadkit.errors import SquadkitError

        if inputs[0]["question"] == "bad":
            raise SquadkitError("this input cannot be answered")
        if inputs[0]["question"] == "crash":
            raise RuntimeError("the model broke")
        return [{"score": 1.0, "start": 0, "end": 3, "answer": "the"} for _ in inputs]


def test_pipeline_errors_are_422_or_500_and_the_server_keeps_serving():
    app = create_app(FailingQA(), ServeSettings(max_wait_ms=0, **QUIET))
    with serve_in_thread(app) as url:
        bad = post(url, "/v1/answer", {"question": "bad", "context": "the king"})
        assert bad.status_code == 422 and bad.json()["detail"] == "this input cannot be answered"
        crash = post(url, "/v1/answer", {"question": "crash", "context": "the king"})
        assert crash.status_code == 500 and "the model broke" in crash.json()["detail"]
        ok = post(url, "/v1/answer", {"question": "who", "context": "the king"})
        assert ok.status_code == 200 and ok.json()["answer"] == "the"


def test_settings_are_validated():
    from squadkit.errors import SquadkitError

    with pytest.raises(SquadkitError, match="max_batch_size"):
        ServeSettings(max_batch_size=0).validate()
    with pytest.raises(SquadkitError, match="max_queue"):
        ServeSettings(max_batch_items=10, max_queue=5).validate()


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


def load_bench_module():
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "benchmarks" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_serve", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bounded_load_has_no_errors(qa, capsys):
    """32 concurrent clients x 20 requests, closed loop; latency is reported, not asserted."""
    bench = load_bench_module()
    app = create_app(qa, ServeSettings(max_batch_size=16, max_wait_ms=5, **QUIET))
    payloads = bench.make_payloads(32, context_words=60)
    with serve_in_thread(app) as url:
        result = bench.run_load(url, payloads, clients=32, requests_per_client=20)
    batcher = app.state.squadkit.batcher
    with capsys.disabled():
        print(f"\n[serve load, tiny model, in-process server] {result.summary()}; "
              f"{batcher.batches_run} micro-batches for {batcher.pairs_answered} pairs")
    assert result.requests == 640 and result.errors == 0, result.statuses
    assert batcher.pairs_answered >= 640


# ---------------------------------------------------------------------------------------------
# subprocess: SIGTERM and the CLI
# ---------------------------------------------------------------------------------------------


def start_cli_server(model: Path, *flags: str) -> tuple[subprocess.Popen, str, list[str]]:
    """``python -m squadkit serve --port 0 ...``; returns the process, its URL and its stderr lines (live)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "squadkit", "serve", "--model", str(model), "--port", "0", "--backend", "torch",
         "--device", "cpu", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if " at http://" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(120):
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    url = re.search(r"at (http://\S+) ", "".join(lines)).group(1)
    wait_until(lambda: _ready(url), 60)
    return proc, url, lines


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight(tiny_bert, qa):
    # a long batching wait keeps the request in the server when SIGTERM arrives
    proc, url, lines = start_cli_server(tiny_bert, "--max-wait-ms", "1500", "--max-batch-size", "8")
    try:
        question, context = EXAMPLES[1]
        result = {}
        client = threading.Thread(target=lambda: result.update(r=post(url, "/v1/answer", {
            "question": question, "context": context})))
        client.start()
        wait_until(lambda: httpx.get(url + "/readyz").json().get("queued") == 1)
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        returncode = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["r"].status_code == 200, result["r"].text
    assert_same_answers(result["r"].json(), qa(question=question, context=context))
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit is "by SIGTERM" (or 0 on older uvicorn)
    assert returncode in (0, -signal.SIGTERM)
    log = "".join(lines)
    assert "Application shutdown complete" in log and "Traceback" not in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "squadkit", "serve", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_missing_model_folder_is_one_line_exit_2(tmp_path):
    result = run_cli("--model", str(tmp_path / "nope"), "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: model folder not found"]


def test_cli_port_in_use_is_one_line_exit_2(tiny_bert):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("--model", str(tiny_bert), "--port", str(port))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_cli_bad_setting_is_one_line_exit_2(tiny_bert):
    result = run_cli("--model", str(tiny_bert), "--max-batch-size", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --max-batch-size must be an integer >= 1, got 0"]  # the flag as typed


def test_cli_help_lists_the_flags():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--max-batch-size", "--max-wait-ms", "--max-queue", "--max-body-bytes", "--max-context-chars",
                 "--max-batch-items", "--request-timeout", "--host", "--port", "--backend"):
        assert flag in result.stdout


def test_cli_flags_are_serve_settings_and_old_spellings_still_work():
    """One flag per ServeSettings field (--name-with-dashes), defaults from the dataclass; old spellings hidden."""
    import dataclasses

    import typer.main
    from typer.testing import CliRunner

    from squadkit.cli import app

    command = typer.main.get_command(app).commands["serve"]
    options = {p.name: p for p in command.params}
    for f in dataclasses.fields(ServeSettings):
        assert "--" + f.name.replace("_", "-") in options[f.name].opts, f.name
        assert options[f.name].default == f.default, f.name
    assert set(options) == {f.name for f in dataclasses.fields(ServeSettings)} | {"model", "index"}
    assert "--request-timeout " not in CliRunner().invoke(app, ["serve", "--help"]).output  # hidden alias
    for typed in ("--request-timeout", "--request-timeout-s", "--request_timeout_s"):
        result = CliRunner().invoke(app, ["serve", "-m", "nowhere", typed, "0"])
        assert result.exit_code == 2 and f"{typed} must be > 0" in result.output, result.output


def test_model_info_says_which_onnx_file_runs(tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from squadkit.export import export_model

    folder = export_model(str(tiny_bert), tmp_path / "onnx", quantize="int8")
    for precision, file in (("int8", "model.int8.onnx"), ("fp32", "model.onnx")):
        qa = QuestionAnswerer(str(folder), precision=precision)
        assert qa.model_file.endswith(file)
        with TestClient(create_app(qa, ServeSettings(**QUIET))) as client:
            info = client.get("/v1/model").json()
        assert (info["model_file"], info["precision"], info["backend"]) == (file, precision, "onnx")
