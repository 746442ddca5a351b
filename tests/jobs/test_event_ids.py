"""
The event stream's ids and what a client at some id is sent (jobs/api/events.py
plan()): derived from the job's status_log and step, so every process and
every restart agrees. The stream itself runs in tests/test_events.py.
"""

import pytest

from jobs.api.events import EPOCH, STEP, Position, Snapshot, parse_event_id, plan


def snap(statuses: str, step: int = 0, **body) -> Snapshot:
    body = {"status": statuses.split(",")[-1], "progress": 0, "current_step": step, "num_inference_steps": 20,
            "estimated_completion_at": None, "queue_position": None, "estimated_start_at": None, **body}
    return Snapshot(statuses=tuple(statuses.split(",")), step=step, body=body)


def names(events) -> list[tuple[int, str]]:
    return [(event_id, name) for event_id, name, _ in events]


def test_a_fresh_stream_starts_with_the_current_status_and_progress():
    assert names(plan(Position(), snap("pending,running", step=7))) == [
        (2 * EPOCH, "status"), (2 * EPOCH + 7 * STEP, "progress"),
    ]


def test_a_fresh_stream_of_a_finished_job_is_its_terminal_event_only():
    assert names(plan(Position(), snap("pending,running,completed"))) == [(3 * EPOCH, "completed")]


def test_resuming_sends_every_status_after_the_last_seen_and_no_earlier_one():
    events = plan(Position(last_id=1 * EPOCH + 1), snap("pending,running,pending,running,failed"))
    assert names(events) == [
        (2 * EPOCH, "status"), (3 * EPOCH, "status"), (4 * EPOCH, "status"), (5 * EPOCH, "failed"),
    ]


def test_resuming_in_the_same_epoch_sends_only_newer_progress():
    assert plan(Position(last_id=2 * EPOCH + 7 * STEP), snap("pending,running", step=7)) == []
    assert names(plan(Position(last_id=2 * EPOCH + 7 * STEP), snap("pending,running", step=9))) == [
        (2 * EPOCH + 9 * STEP, "progress"),
    ]


def test_queue_events_are_numbered_within_the_pending_epoch_and_sent_on_a_change():
    first = plan(Position(), snap("pending", queue_position=3))
    assert names(first) == [(EPOCH, "status"), (EPOCH + 1, "queue")]
    same = Position(last_id=EPOCH + 1, queue_position=3)
    assert plan(same, snap("pending", queue_position=3)) == []
    assert names(plan(same, snap("pending", queue_position=2))) == [(EPOCH + 2, "queue")]


def test_ids_always_increase_along_a_job():
    position = Position()
    seen = []
    for state in [snap("pending", queue_position=2), snap("pending", queue_position=1), snap("pending,running"),
                  snap("pending,running", step=3), snap("pending,running", step=20), snap("pending,running,completed")]:
        for event_id, name, _ in plan(position, state):
            seen.append(event_id)
            position.last_id = event_id
        position.queue_position = state.body["queue_position"]
    assert seen == sorted(set(seen))


def test_an_id_from_beyond_the_jobs_history_is_a_fresh_start():
    assert names(plan(Position(last_id=9 * EPOCH), snap("pending,running"))) == [(2 * EPOCH, "status")]


@pytest.mark.parametrize("given, parsed", [("2007000", 2007000), (" 5 ", 5), ("", None), ("-1", None), ("1e6", None),
                                           ("٣", None), ("9" * 16, None), (None, None)])
def test_last_event_id_is_a_plain_number_or_ignored(given, parsed):
    assert parse_event_id(given) == parsed
