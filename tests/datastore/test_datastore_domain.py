"""The datastore's pure rules: stage order, record assembly, manifest checks."""

from __future__ import annotations

import itertools
import json

import pytest
from ds_helpers import KEY, adapter_manifest, event, inference_result, job_request, lifecycle, receipt, verdict

from loranet import codec
from loranet import protocol as p
from loranet.errors import Refused, ServiceError
from services.datastore import domain


def _fields(events):
    """What Redis would hold after recording `events` in order (first write per field wins)."""
    fields: dict[str, bytes] = {}
    for ev in events:
        body = domain.check_event(ev, p.job_events(KEY, ev.job_id))
        fields.setdefault(domain.event_field(ev, body), codec.encode(ev))
    return fields


def test_stage_order_is_total_over_every_stage():
    assert set(domain.STAGE_RANK) == set(p.Stage) == set(domain.STAGE_BODY)
    assert domain.status_of(["settled", "dispatched"]) == "settled"
    assert domain.status_of(["verdict", "failed"]) == "failed"
    assert domain.status_of(["failed", "refunded", "admitted"]) == "refunded"
    assert domain.status_of(["rejected", "dispatched"]) == "rejected"


def test_record_is_the_same_whatever_the_order_and_duplicates():
    job_id = p.new_job_id()
    events = lifecycle(job_id)
    expected = domain.assemble_record(job_id, _fields(events))
    assert expected.status == "settled" and expected.stages == [
        "admitted",
        "dispatched",
        "result",
        "verdict",
        "settled",
    ]
    # Every order of the first five events, each twice; the settled one is late in half of them.
    for order in itertools.islice(itertools.permutations(events), 0, 720, 7):
        assert domain.assemble_record(job_id, _fields(list(order) + list(order))) == expected


def test_first_event_of_a_stage_wins_but_every_verifier_counts():
    job_id = p.new_job_id()
    req = job_request(job_id)
    res = inference_result(req)
    fields = _fields(
        [
            event(job_id, "dispatched", node_id="first", at=10.0),
            event(job_id, "dispatched", node_id="second", at=5.0),
            event(job_id, "verdict", verdict(res, "v1")),
            event(job_id, "verdict", verdict(res, "v1", accepted=False)),  # redelivered with other content: ignored
            event(job_id, "verdict", verdict(res, "v2", accepted=False)),
        ]
    )
    record = domain.assemble_record(job_id, fields)
    assert record.node_id == "first"
    assert [(v.verifier_id, v.accepted) for v in record.verdicts] == [("v1", True), ("v2", False)]
    assert record.request == req  # recovered from the verdict's embedded result
    assert record.status == "verdict" and record.result is None


def test_events_that_cannot_be_recorded_are_rejected():
    job_id = p.new_job_id()
    with pytest.raises(Refused, match="needs its JobRequest"):
        domain.check_event(event(job_id, "admitted"), p.job_events(KEY, job_id))
    with pytest.raises(Refused, match="arrived on"):
        domain.check_event(event(job_id, "dispatched"), p.job_events(KEY, p.new_job_id()))
    with pytest.raises(Refused, match="receipt status"):
        domain.check_event(event(job_id, "refunded", receipt(job_id, "settled")), p.job_events(KEY, job_id))
    with pytest.raises(Refused, match="body of stage"):
        domain.check_event(event(job_id, "verdict", job_request(job_id)), p.job_events(KEY, job_id))
    assert domain.check_event(event(job_id, "failed", reason="x"), p.job_events(KEY, job_id)) is None
    # keyed by client: a body signed by one client on another client's subject, or no client token
    with pytest.raises(Refused, match="subject names"):
        domain.check_event(event(job_id, "admitted", job_request(job_id)), p.job_events("ef" * 32, job_id))
    with pytest.raises(Refused, match="arrived on"):
        domain.check_event(event(job_id, "dispatched"), f"jobs.events.{job_id}")


def test_adapter_upload_checks(models):
    a = models.adapters[1]
    manifest = adapter_manifest(a, models.model_id)
    domain.check_adapter_upload(manifest, a.config, a.weights)
    with pytest.raises(ServiceError) as err:
        domain.check_adapter_upload(manifest, a.config, a.weights[:-4] + b"\0\0\0\0")
    assert err.value.code == "hash_mismatch"
    dup = manifest.model_copy(
        update={"contributors": [manifest.contributors[0].model_copy(update={"weight_bps": 5000})] * 2}
    )
    with pytest.raises(ServiceError) as err:
        domain.check_adapter_upload(dup, a.config, a.weights)
    assert err.value.code == "invalid" and err.value.field == "manifest.contributors.1"
    targets = manifest.model_copy(update={"target_modules": ["q_proj"]})
    with pytest.raises(ServiceError) as err:
        domain.check_adapter_upload(targets, a.config, a.weights)
    assert err.value.field == "manifest.target_modules"
    assert json.loads(a.config)["base_model_name_or_path"] == models.model_id
    with pytest.raises(ValueError, match="10000"):
        p.AdapterManifest.model_validate(
            {
                **manifest.model_dump(),
                "contributors": [{"contributor_id": "x", "address": "0x" + "1" * 40, "weight_bps": 9999}],
            }
        )


def test_manifest_digest_ignores_registration_time(models):
    m = adapter_manifest(models.adapters[0], models.model_id)
    assert domain.manifest_digest(m) == domain.manifest_digest(m.model_copy(update={"registered_at": 123.0}))
    assert domain.manifest_digest(m) != domain.manifest_digest(m.model_copy(update={"license": "mit"}))


def test_a_rerun_is_recorded_per_attempt_and_the_status_follows_the_latest_attempt():
    job_id = p.new_job_id()
    req = job_request(job_id)
    bad = inference_result(req, node_id="cheat")
    good = inference_result(req, node_id="honest").model_copy(update={"attempt": 1})
    rerun = p.RerunRequest(job_id=job_id, attempt=1, request=req, exclude=["cheat"], reason="fingerprint", at=3.0)
    first = [
        event(job_id, "admitted", req, at=1.0),
        event(job_id, "dispatched", node_id="cheat", at=1.1),
        event(job_id, "result", bad, node_id="cheat", at=1.2),
        event(job_id, "verdict", verdict(bad, "v1", accepted=False), at=1.3),
        event(job_id, "rerun", rerun, node_id="cheat", at=1.4, attempt=1, reason="attempt 0 rejected"),
    ]
    second = [
        event(job_id, "dispatched", node_id="honest", at=1.5, attempt=1),
        event(job_id, "result", good, node_id="honest", at=1.6, attempt=1),
        event(job_id, "verdict", verdict(good, "v1"), at=1.7, attempt=1),
    ]
    mid = domain.assemble_record(job_id, _fields(first))
    assert mid.status == "rerun" and mid.attempt == 1 and mid.reason == "attempt 0 rejected"
    # The re-run's dispatch moves the status on from the first attempt's verdict (in any arrival order).
    record = domain.assemble_record(job_id, _fields(second + first))
    assert record == domain.assemble_record(job_id, _fields(first + second + first))
    assert record.status == "verdict" and record.attempt == 1
    assert record.result == good and record.node_id == "honest"
    assert [(v.result.attempt, v.accepted) for v in record.verdicts] == [(0, False), (1, True)]
    assert record.stages == ["admitted", "dispatched", "result", "verdict", "rerun", "dispatched", "result", "verdict"]
    done = domain.assemble_record(job_id, _fields(first + second + [event(job_id, "settled", receipt(job_id), at=2.0)]))
    assert done.status == "settled" and done.stages[-1] == "settled" and done.result == good
    # An event whose body is another attempt than it says is refused.
    with pytest.raises(Refused):
        domain.check_event(event(job_id, "result", good, node_id="honest", at=1.6), p.job_events(KEY, job_id))
