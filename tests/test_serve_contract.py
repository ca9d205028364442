"""The HTTP contract: schemathesis over every route of the server's own /openapi.json, all checks.

The server is made as ``squadkit serve`` makes it (``serve.app_for``: the model loaded first, then
the app) and run by uvicorn on a loopback port, four ways: with and without ``--index``, with and
without a calibrator in the model folder. Every generated request must get an answer the schema
documents (status, headers, body), schema-valid requests must be accepted and invalid ones refused,
and no request may cause a server error. The number of examples is bounded to keep this quick.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (the test extra)")

from schemathesis.engine import Status, events, from_schema  # noqa: E402

from squadkit.serve import ServeSettings, app_for, serve_in_thread  # noqa: E402

MAX_EXAMPLES = 10  # per operation, in the fuzzing phase (the coverage phase adds its boundary cases)
# as `squadkit serve --max-context-chars 1000 ...` would: smaller limits keep the boundary cases quick
SETTINGS = dict(backend="torch", device="cpu", max_context_chars=1000, max_question_chars=200, max_batch_items=4,
                access_log=False, log_level="error")  # schemathesis sends malformed HTTP on purpose


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory, tiny_bert):
    """The tiny model with a calibrator in its squadkit.json (made up, not fitted: the contract is under test)."""
    from squadkit.calibration import Calibrator

    folder = tmp_path_factory.mktemp("contract") / "calibrated"
    shutil.copytree(tiny_bert, folder)
    calibrator = Calibrator(mean=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0), answer_weights=(0.0, 0.5, -0.5, 0.0),
                            abstain_weights=(0.0, -0.5, 0.5, 0.0))
    (folder / "squadkit.json").write_text(json.dumps({"calibration": calibrator.to_json()}))
    return folder


def run_schemathesis(url: str) -> tuple[int, list[str]]:
    """All checks, all phases, a bounded number of examples; (requests sent, failures described)."""
    config = schemathesis.Config.from_dict({
        "seed": 17, "checks": {"enabled": True}, "cache": {"enabled": False},  # no .schemathesis/ left behind
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    })
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    sent, failures = 0, []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        case = event.recorder.cases[case_id].value
                        response = event.recorder.interactions.get(case_id)
                        got = f"{response.response.status_code} {response.response.content[:300]!r}" \
                            if response is not None and response.response is not None else "no response"
                        failures.append(f"{event.label}: {check.name}: {check.failure_info.failure.title} "
                                        f"(body {str(case.body)[:300]}; got {got})")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"schemathesis error: {event}")
        elif isinstance(event, events.EngineFinished):
            failures += [f"after the run: {f}" for f in event.failures]
    return sent, failures


@pytest.mark.parametrize("calibrated, with_index", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["plain", "plain+index", "calibrated", "calibrated+index"])
def test_every_route_keeps_its_openapi_contract(tiny_bert, calibrated_model, docs_index, calibrated, with_index, capsys):
    model = calibrated_model if calibrated else tiny_bert
    app = app_for(str(model), ServeSettings(**SETTINGS),
                  index=docs_index if with_index else None)
    with serve_in_thread(app) as url:
        raw = schemathesis.openapi.from_url(url + "/openapi.json").raw_schema
        sent, failures = run_schemathesis(url)
    paths, bodies = set(raw["paths"]), raw["components"]["schemas"]
    assert ("/v1/ask" in paths) == ("/v1/index" in paths) == with_index
    # min_confidence is offered exactly where the model is calibrated (and refused elsewhere: test_serve.py)
    assert ("min_confidence" in bodies["AnswerRequest"]["properties"]) == calibrated
    if with_index:
        assert ("min_confidence" in bodies["AskRequest"]["properties"]) == calibrated
    assert {"/v1/answer", "/v1/answer/batch", "/healthz", "/readyz", "/v1/model"} <= paths
    with capsys.disabled():
        print(f"\n[schemathesis, {'calibrated' if calibrated else 'plain'}{' + index' if with_index else ''}] "
              f"{sent} requests over {len(paths)} routes, {len(failures)} failures")
    assert sent > 100  # it did exercise the routes
    assert not failures, "\n".join(dict.fromkeys(failures))
