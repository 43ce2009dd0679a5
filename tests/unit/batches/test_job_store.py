"""Batch jobs and per-image outcomes in DynamoDB (moto, tables as template.yaml makes them)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from modelrun.aws.dynamo import dynamo, plain
from modelrun.batches.store import (
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED,
    FAILED_OUTCOME,
    PREDICTED,
    QUEUED,
    RECOVERING,
    RUNNING,
    JobStore,
    Outcome,
    job_document,
    new_batch_id,
    public_outcome,
)
from modelrun.errors import NotFound
from tests.batchfixtures import DEFAULT, BatchAws

BATCH = "b-20250101T000000-0123456789ab"
OTHER_BATCH = "b-20250101T000001-ba9876543210"
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Step Functions execution names: 1..80 characters, none of whitespace, < > { } [ ] ? * " # % \ ^ | ~ ` $ & , ; : /
EXECUTION_NAME = re.compile(r"^[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]{1,80}$")


@pytest.fixture
def store(aws: BatchAws) -> JobStore:
    return aws.store


def new_job(store: JobStore, batch_id: str = BATCH, **fields: Any) -> None:
    store.for_tenant(DEFAULT).create({"batch_id": batch_id, "model": "digits", "version": "1", "total": 10, **fields})


def predicted(item: int, attempt: int = 1, label: str = "7", score: float = 0.9) -> Outcome:
    return Outcome(
        item=item,
        key=f"uploads/{item}.png",
        chunk=item // 10,
        status=PREDICTED,
        attempt=attempt,
        result={
            "label": label,
            "score": score,
            "top_k": [{"label": label, "score": score}, {"label": "1", "score": round(1 - score, 6)}],
        },
    )


def failed(item: int, attempt: int = 1, code: str = "invalid_image") -> Outcome:
    return Outcome(
        item=item,
        key=f"uploads/{item}.png",
        chunk=item // 10,
        status=FAILED_OUTCOME,
        attempt=attempt,
        error_code=code,
        error_message=f"{code} for item {item}",
    )


def stored(aws: BatchAws, item: int, batch_id: str = BATCH) -> dict[str, Any]:
    found: dict[str, Any] = aws.items.get_item(Key={"batch_id": batch_id, "item": item}, ConsistentRead=True)["Item"]
    return plain(found)


# --- the tables ---------------------------------------------------------------------------------------------


def test_the_items_table_has_the_templates_by_status_index_over_batch_status_and_item(aws: BatchAws) -> None:
    # given the items table made from the template
    # when it is described
    indexes = aws.items.global_secondary_indexes

    # then the by_status index is keyed by batch_status and ordered by item, projecting everything
    assert [index["IndexName"] for index in indexes] == ["by_status"]
    assert indexes[0]["KeySchema"] == [
        {"AttributeName": "batch_status", "KeyType": "HASH"},
        {"AttributeName": "item", "KeyType": "RANGE"},
    ]
    assert indexes[0]["Projection"] == {"ProjectionType": "ALL"}


# --- create / get / update ----------------------------------------------------------------------------------


def test_a_created_job_is_queued_with_zero_counters_and_its_own_fields(store: JobStore) -> None:
    # given a new job
    new_job(store, chunk_count=2)

    # when it is read back
    job = store.get(BATCH)

    # then it is queued, counts nothing yet, and keeps what it was given with plain ints
    assert job["status"] == QUEUED
    assert (job["predicted"], job["failed"]) == (0, 0)
    assert (job["model"], job["version"], job["total"], job["chunk_count"]) == ("digits", "1", 10, 2)
    assert type(job["total"]) is int
    assert ISO_MILLIS_Z.match(job["created_at"])
    assert job["expires_at"] > 0


def test_creating_a_job_whose_batch_id_exists_is_refused_and_keeps_the_first(store: JobStore) -> None:
    # given a job
    new_job(store, total=10)

    # when another job is created under the same id
    with pytest.raises(ClientError) as caught:
        new_job(store, total=99)

    # then DynamoDB's condition refuses it and the first job is untouched
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert store.get(BATCH)["total"] == 10


def test_getting_an_unknown_batch_is_not_found_naming_the_id(store: JobStore) -> None:
    # given no job
    # when one is read
    with pytest.raises(NotFound) as caught:
        store.get("b-nothing")

    # then it is a 404 that names the id
    assert (caught.value.code, caught.value.status) == ("not_found", 404)
    assert caught.value.details == {"batch_id": "b-nothing"}
    assert "'b-nothing'" in caught.value.message


def test_an_update_sets_the_given_fields_and_leaves_the_others(store: JobStore) -> None:
    # given a queued job
    new_job(store)

    # when its status and start time are set
    store.update(BATCH, status=RUNNING, started_at="2025-01-01T00:00:00.000Z")

    # then those change and the rest stays
    job = store.get(BATCH)
    assert (job["status"], job["started_at"]) == (RUNNING, "2025-01-01T00:00:00.000Z")
    assert (job["model"], job["total"], job["predicted"]) == ("digits", 10, 0)


def test_an_update_stores_floats_and_reads_them_back_as_floats(store: JobStore) -> None:
    # given a job
    new_job(store)

    # when a float and a nested float are stored
    store.update(BATCH, ratio=0.25, stats={"mean_ms": 12.5, "runs": [1.5, 2]})

    # then they come back as the same floats and ints
    job = store.get(BATCH)
    assert job["ratio"] == 0.25
    assert job["stats"] == {"mean_ms": 12.5, "runs": [1.5, 2]}


# --- add_counts ---------------------------------------------------------------------------------------------


def test_counts_accumulate_across_calls_including_negative_changes(store: JobStore) -> None:
    # given a job with no counts
    new_job(store)

    # when three changes are added, one of them replacing a failure with a prediction
    store.add_counts(BATCH, predicted=3, failed=2)
    store.add_counts(BATCH, predicted=1, failed=0)
    store.add_counts(BATCH, predicted=1, failed=-1)

    # then the counters hold their sum
    job = store.get(BATCH)
    assert (job["predicted"], job["failed"]) == (5, 1)


def test_adding_nothing_leaves_the_job_untouched(store: JobStore) -> None:
    # given a job
    new_job(store)
    before = store.get(BATCH)

    # when a zero change is added
    store.add_counts(BATCH, predicted=0, failed=0)

    # then not even updated_at moves
    assert store.get(BATCH) == before


# --- note_parked --------------------------------------------------------------------------------------------


def test_parked_chunks_are_appended_to_the_job_in_order_and_shown_in_its_document(store: JobStore) -> None:
    # given a job
    new_job(store)

    # when two of its chunks are parked, one entry with a float
    store.note_parked(BATCH, {"chunk": 3, "reason": "retries_exhausted", "waited_s": 1.5})
    store.note_parked(BATCH, {"chunk": 7, "reason": "retries_exhausted"})

    # then the job lists both, oldest first, and its document shows them
    parked = store.get(BATCH)["parked"]
    assert parked == [
        {"chunk": 3, "reason": "retries_exhausted", "waited_s": 1.5},
        {"chunk": 7, "reason": "retries_exhausted"},
    ]
    assert job_document(store.get(BATCH), {})["parked"] == parked


@pytest.mark.parametrize("terminal", [COMPLETED, COMPLETED_WITH_ERRORS, FAILED])
def test_an_update_of_an_open_job_leaves_an_ended_one_as_it_is(store: JobStore, terminal: str) -> None:
    # given an ended job
    new_job(store)
    store.close(BATCH, terminal)

    # when it is updated as an open one, then nothing changes
    assert store.update_open(BATCH, status=RECOVERING) is False
    assert store.get(BATCH)["status"] == terminal


def test_an_update_of_an_open_job_sets_its_fields(store: JobStore) -> None:
    new_job(store)
    assert store.update_open(BATCH, status=RECOVERING, note="waiting") is True
    assert (store.get(BATCH)["status"], store.get(BATCH)["note"]) == (RECOVERING, "waiting")


# --- start_attempt ------------------------------------------------------------------------------------------

RETRYABLE = (COMPLETED_WITH_ERRORS, FAILED, RECOVERING)


def test_starting_the_next_attempt_queues_the_job_and_moves_its_failures_back_to_pending(store: JobStore) -> None:
    # given a job of ten that ended with seven predicted and three failed
    new_job(store)
    store.add_counts(BATCH, predicted=7, failed=3)
    store.close(BATCH, COMPLETED_WITH_ERRORS)

    # when attempt 2 starts
    started = store.start_attempt(BATCH, seen_attempt=1, statuses=RETRYABLE, retried=3)

    # then the job is QUEUED at attempt 2 with the three failures pending again
    assert started is True
    job = store.get(BATCH)
    assert (job["status"], job["attempt"], job["retried"]) == (QUEUED, 2, 3)
    assert job_document(job, {})["counts"] == {"predicted": 7, "failed": 0, "pending": 3}


def test_of_two_retries_that_saw_the_same_attempt_only_the_first_starts_one(store: JobStore) -> None:
    # given a job that ended with failures, read by two retries at once
    new_job(store, attempt=1)
    store.close(BATCH, FAILED)

    # when both try to start attempt 2
    first = store.start_attempt(BATCH, seen_attempt=1, statuses=RETRYABLE)
    second = store.start_attempt(BATCH, seen_attempt=1, statuses=RETRYABLE)

    # then only the first did, and the job is at attempt 2
    assert (first, second) == (True, False)
    assert store.get(BATCH)["attempt"] == 2


@pytest.mark.parametrize("current", [QUEUED, RUNNING, COMPLETED])
def test_a_job_that_is_running_or_completed_starts_no_attempt(store: JobStore, current: str) -> None:
    # given a job that is not in a retryable status (created before attempts were recorded: attempt 1)
    new_job(store)
    store.update(BATCH, status=current)

    # when another attempt is asked for, then none starts and the job is as it was
    assert store.start_attempt(BATCH, seen_attempt=1, statuses=RETRYABLE) is False
    assert (store.get(BATCH)["status"], store.get(BATCH).get("attempt")) == (current, None)


# --- close --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("current", [QUEUED, RUNNING, RECOVERING])
def test_a_job_that_is_not_terminal_closes_with_the_given_status_and_fields(store: JobStore, current: str) -> None:
    # given a job in a non-terminal status
    new_job(store)
    store.update(BATCH, status=current)

    # when it is closed
    closed = store.close(BATCH, COMPLETED_WITH_ERRORS, predicted=9, failed=1, results_key="results/x.jsonl")

    # then the close took effect with its fields
    assert closed is True
    job = store.get(BATCH)
    assert (job["status"], job["predicted"], job["failed"]) == (COMPLETED_WITH_ERRORS, 9, 1)
    assert job["results_key"] == "results/x.jsonl"


@pytest.mark.parametrize("terminal", [COMPLETED, COMPLETED_WITH_ERRORS, FAILED])
def test_closing_an_already_closed_job_is_refused_and_keeps_the_first_close(store: JobStore, terminal: str) -> None:
    # given a job closed once
    new_job(store)
    assert store.close(BATCH, terminal, predicted=10, failed=0)

    # when another writer closes it with other figures
    closed = store.close(BATCH, COMPLETED_WITH_ERRORS if terminal != COMPLETED_WITH_ERRORS else FAILED, predicted=1)

    # then the second close reports False and changed nothing
    assert closed is False
    job = store.get(BATCH)
    assert (job["status"], job["predicted"]) == (terminal, 10)


def test_closing_a_batch_that_does_not_exist_reports_false_and_creates_nothing(aws: BatchAws) -> None:
    # given no job
    # when a close is attempted
    closed = aws.store.close("b-ghost", COMPLETED, predicted=1)

    # then nothing was closed and no row appeared
    assert closed is False
    assert aws.jobs.scan()["Items"] == []


# --- record_outcome -----------------------------------------------------------------------------------------


def test_a_first_prediction_is_recorded_and_counts_one_predicted(aws: BatchAws) -> None:
    # given an image with no outcome
    # when its prediction is recorded
    delta = aws.store.record_outcome(BATCH, predicted(3))

    # then it counts one prediction and is stored with its label and status key
    assert delta == (1, 0)
    record = stored(aws, 3)
    assert (record["status"], record["result"]["label"], record["result"]["score"]) == (PREDICTED, "7", 0.9)
    assert record["batch_status"] == f"{BATCH}#predicted"


def test_a_first_failure_is_recorded_and_counts_one_failed(aws: BatchAws) -> None:
    # given an image with no outcome
    # when its failure is recorded
    delta = aws.store.record_outcome(BATCH, failed(4, code="image_not_found"))

    # then it counts one failure and keeps the code
    assert delta == (0, 1)
    assert stored(aws, 4)["error_code"] == "image_not_found"


def test_recording_the_same_prediction_again_changes_nothing(aws: BatchAws) -> None:
    # given a recorded prediction
    aws.store.record_outcome(BATCH, predicted(3, label="7"))
    first = stored(aws, 3)

    # when the chunk is reprocessed and records the image again
    delta = aws.store.record_outcome(BATCH, predicted(3, label="1"))

    # then nothing counts and the first record stays, timestamp included
    assert delta == (0, 0)
    assert stored(aws, 3) == first


def test_a_prediction_is_never_replaced_even_by_a_later_attempt(aws: BatchAws) -> None:
    # given a prediction from attempt 1
    aws.store.record_outcome(BATCH, predicted(3, attempt=1, label="7"))

    # when attempt 2 records another prediction for it
    delta = aws.store.record_outcome(BATCH, predicted(3, attempt=2, label="1"))

    # then the first prediction wins
    assert delta == (0, 0)
    assert (stored(aws, 3)["result"]["label"], stored(aws, 3)["attempt"]) == ("7", 1)


def test_a_failure_replaced_by_a_later_attempts_prediction_counts_one_prediction(aws: BatchAws) -> None:
    # given a failure from attempt 1 (attempt 2 moved it back to pending when it started)
    aws.store.record_outcome(BATCH, failed(5, attempt=1))

    # when attempt 2 predicts the image
    delta = aws.store.record_outcome(BATCH, predicted(5, attempt=2))

    # then the change is one more prediction, and the record is the prediction
    assert delta == (1, 0)
    record = stored(aws, 5)
    assert (record["status"], record["attempt"], record["result"]["label"]) == (PREDICTED, 2, "7")
    assert "error_code" not in record


def test_a_failure_is_not_replaced_by_the_same_attempt(aws: BatchAws) -> None:
    # given a failure from attempt 1
    aws.store.record_outcome(BATCH, failed(5, attempt=1))

    # when attempt 1 (a redelivered chunk) predicts the image
    delta = aws.store.record_outcome(BATCH, predicted(5, attempt=1))

    # then the failure stays
    assert delta == (0, 0)
    assert stored(aws, 5)["status"] == FAILED_OUTCOME


def test_a_failure_is_not_replaced_by_an_earlier_attempt(aws: BatchAws) -> None:
    # given a failure from attempt 2
    aws.store.record_outcome(BATCH, failed(5, attempt=2))

    # when a late attempt-1 chunk predicts the image
    delta = aws.store.record_outcome(BATCH, predicted(5, attempt=1))

    # then the attempt-2 failure stays
    assert delta == (0, 0)
    assert (stored(aws, 5)["status"], stored(aws, 5)["attempt"]) == (FAILED_OUTCOME, 2)


def test_a_failure_replaced_by_a_later_attempts_failure_counts_one_failure_and_takes_the_new_error(
    aws: BatchAws,
) -> None:
    # given a failure from attempt 1
    aws.store.record_outcome(BATCH, failed(5, attempt=1, code="image_not_found"))

    # when attempt 2 fails it differently
    delta = aws.store.record_outcome(BATCH, failed(5, attempt=2, code="invalid_image"))

    # then it counts as attempt 2's failure, and the record is attempt 2's
    assert delta == (0, 1)
    assert (stored(aws, 5)["error_code"], stored(aws, 5)["attempt"]) == ("invalid_image", 2)


def test_the_same_item_number_in_two_batches_are_two_outcomes(aws: BatchAws) -> None:
    # given item 0 of one batch recorded
    aws.store.record_outcome(BATCH, predicted(0))

    # when item 0 of another batch is recorded
    delta = aws.store.record_outcome(OTHER_BATCH, failed(0))

    # then it is new, and each batch keeps its own
    assert delta == (0, 1)
    assert (stored(aws, 0)["status"], stored(aws, 0, OTHER_BATCH)["status"]) == (PREDICTED, FAILED_OUTCOME)


# --- outcomes / iter_outcomes / recount ---------------------------------------------------------------------


def record_mixed(store: JobStore, count: int, failing: set[int], batch_id: str = BATCH) -> None:
    """Outcomes for items 0..count-1, recorded in reverse order; the items in ``failing`` failed."""
    for item in reversed(range(count)):
        store.record_outcome(batch_id, failed(item) if item in failing else predicted(item))


def test_outcomes_come_in_item_order_one_page_at_a_time(store: JobStore) -> None:
    # given five outcomes recorded out of order, and another batch's
    record_mixed(store, 5, failing=set())
    record_mixed(store, 3, failing=set(), batch_id=OTHER_BATCH)

    # when they are paged two at a time
    pages = []
    page, start = store.outcomes(BATCH, limit=2)
    pages.append([record["item"] for record in page])
    while start:
        page, start = store.outcomes(BATCH, limit=2, start=start)
        pages.append([record["item"] for record in page])

    # then every item of this batch comes once, in order
    assert pages == [[0, 1], [2, 3], [4]]


def test_outcomes_of_one_status_come_through_the_status_index_in_item_order(store: JobStore) -> None:
    # given a batch whose items 1, 4 and 6 failed
    record_mixed(store, 8, failing={1, 4, 6})

    # when the failed ones are asked for, two per page
    first, start = store.outcomes(BATCH, status=FAILED_OUTCOME, limit=2)
    second, end = store.outcomes(BATCH, status=FAILED_OUTCOME, limit=2, start=start)

    # then only failures come, in item order, over two pages
    assert [record["item"] for record in first] == [1, 4]
    assert [record["item"] for record in second] == [6]
    assert {record["status"] for record in first + second} == {FAILED_OUTCOME}
    assert end is None


def test_iterating_outcomes_goes_past_a_thousand_items_once_each(aws: BatchAws) -> None:
    # given 1,003 outcomes, more than one page
    with aws.items.batch_writer() as writer:
        for item in range(1003):
            writer.put_item(Item=predicted(item).record(BATCH))

    # when they are iterated
    items = [int(record["item"]) for record in aws.store.iter_outcomes(BATCH)]

    # then each comes exactly once, in order
    assert items == list(range(1003))


def test_iterating_one_status_yields_only_that_status(store: JobStore) -> None:
    # given a batch with two failures
    record_mixed(store, 6, failing={0, 5})

    # when the predicted ones are iterated
    items = [int(record["item"]) for record in store.iter_outcomes(BATCH, status=PREDICTED)]

    # then the failures are left out
    assert items == [1, 2, 3, 4]


def test_a_recount_counts_each_status_from_the_items(store: JobStore) -> None:
    # given seven outcomes, two failed, and one failure later replaced by a prediction
    record_mixed(store, 7, failing={2, 3, 6})
    store.record_outcome(BATCH, predicted(6, attempt=2))

    # when the batch is recounted
    counts = store.recount(BATCH)

    # then the figures are the items' own
    assert counts == {PREDICTED: 5, FAILED_OUTCOME: 2}


def test_a_recount_for_a_later_attempt_counts_earlier_failures_as_pending(store: JobStore) -> None:
    # given attempt 1's outcomes of six images, three failed, and attempt 2 that has recorded one of those again
    record_mixed(store, 6, failing={1, 3, 5})
    store.record_outcome(BATCH, predicted(3, attempt=2))

    # when the batch is recounted for attempt 2
    counts = store.recount(BATCH, attempt=2)

    # then only the final outcomes count: attempt 1's two failures wait for attempt 2
    assert counts == {PREDICTED: 4, FAILED_OUTCOME: 0}


def test_reconciling_a_running_job_leaves_its_counters_to_the_writers(store: JobStore) -> None:
    # given a running job whose last writer recorded its outcome but has not yet added it to the counters
    new_job(store, total=3)
    store.update(BATCH, status=RUNNING)
    for item in (0, 1):
        store.add_counts(BATCH, predicted=store.record_outcome(BATCH, predicted(item))[0], failed=0)
    store.record_outcome(BATCH, predicted(2))

    # when the job is reconciled, and then that writer adds its outcome
    counts = store.reconcile(BATCH)
    store.add_counts(BATCH, predicted=1, failed=0)

    # then the recount saw three, and the counters are exact: the writer's ADD was not counted twice
    assert counts == {PREDICTED: 3, FAILED_OUTCOME: 0}
    assert store.get(BATCH)["predicted"] == 3


def test_reconciling_an_ended_job_sets_its_counters_to_the_recount(store: JobStore) -> None:
    # given a completed job whose counters drifted (a writer died between its outcome and its ADD)
    new_job(store, total=4)
    record_mixed(store, 4, failing={2})
    store.add_counts(BATCH, predicted=1, failed=0)
    store.close(BATCH, COMPLETED_WITH_ERRORS)

    # when it is reconciled
    store.reconcile(BATCH)

    # then its counters are the items' own
    assert (store.get(BATCH)["predicted"], store.get(BATCH)["failed"]) == (3, 1)


def test_a_recount_of_a_batch_without_outcomes_is_zero(store: JobStore) -> None:
    # given outcomes of another batch only
    record_mixed(store, 3, failing={1}, batch_id=OTHER_BATCH)

    # when this batch is recounted, then it has none
    assert store.recount(BATCH) == {PREDICTED: 0, FAILED_OUTCOME: 0}


# --- Outcome.record / public_outcome ------------------------------------------------------------------------


def test_a_predicted_record_holds_the_prediction_as_decimals_and_no_error() -> None:
    # given a prediction
    # when it becomes an items-table record
    record = predicted(12, attempt=2, label="3", score=0.875).record(BATCH)

    # then its keys and prediction are there, numbers as DynamoDB wants them
    assert {name: record[name] for name in ("batch_id", "item", "key", "chunk", "status", "attempt")} == {
        "batch_id": BATCH,
        "item": 12,
        "key": "uploads/12.png",
        "chunk": 1,
        "status": PREDICTED,
        "attempt": 2,
    }
    assert record["batch_status"] == f"{BATCH}#predicted"
    assert record["result"]["score"] == Decimal("0.875")
    assert record["result"]["top_k"] == [
        {"label": "3", "score": Decimal("0.875")},
        {"label": "1", "score": Decimal("0.125")},
    ]
    assert "error_code" not in record
    assert "error_message" not in record


def test_a_failed_record_holds_the_error_and_no_prediction() -> None:
    # given a failure
    # when it becomes a record
    record = failed(2, code="unsupported_media_type").record(BATCH)

    # then it carries the code and message, keyed under the failed status
    assert (record["status"], record["batch_status"]) == (FAILED_OUTCOME, f"{BATCH}#failed")
    assert (record["error_code"], record["error_message"]) == (
        "unsupported_media_type",
        "unsupported_media_type for item 2",
    )
    assert not {"label", "score", "top_k"} & set(record)


def test_a_predicted_record_is_shown_with_its_label_score_and_top_k() -> None:
    # given a stored prediction (DynamoDB numbers)
    record = predicted(4, label="9", score=0.5).record(BATCH)

    # when it is shown
    shown = public_outcome(record)

    # then the public fields carry plain numbers and no table internals
    assert shown == {
        "item": 4,
        "key": "uploads/4.png",
        "status": PREDICTED,
        "attempt": 1,
        "updated_at": record["updated_at"],
        "label": "9",
        "score": 0.5,
        "top_k": [{"label": "9", "score": 0.5}, {"label": "1", "score": 0.5}],
    }


def test_a_failed_record_is_shown_with_its_error_code_and_message() -> None:
    # given a stored failure
    record = failed(4, attempt=3, code="image_too_large").record(BATCH)

    # when it is shown
    shown = public_outcome(record)

    # then the error is nested and there is no prediction
    assert shown["error"] == {"code": "image_too_large", "message": "image_too_large for item 4"}
    assert (shown["status"], shown["attempt"]) == (FAILED_OUTCOME, 3)
    assert "label" not in shown


# --- job_document -------------------------------------------------------------------------------------------


def job(**fields: Any) -> dict[str, Any]:
    return {"batch_id": BATCH, "status": RUNNING, "model": "digits", "version": "1", **fields}


def test_a_job_document_shows_counts_pending_and_percent() -> None:
    # given a job of 8 images, 3 predicted and 2 failed
    # when it is shown
    document = job_document(job(total=8, predicted=3, failed=2, chunk_count=2), {"self": "/batches/x"})

    # then the pending figure and percent follow from the counts
    assert document["counts"] == {"predicted": 3, "failed": 2, "pending": 3}
    assert document["percent"] == 62.5
    assert (document["total"], document["chunks"], document["attempt"]) == (8, 2, 1)
    assert document["links"] == {"self": "/batches/x"}


def test_a_job_document_rounds_the_percent_to_two_decimals() -> None:
    # given one of three images done
    # when it is shown, then the percent is rounded
    assert job_document(job(total=3, predicted=1, failed=0), {})["percent"] == 33.33


def test_a_job_document_never_shows_negative_pending() -> None:
    # given counters that ran ahead of the total
    # when it is shown, then nothing is pending
    assert job_document(job(total=2, predicted=2, failed=1), {})["counts"]["pending"] == 0


def test_a_job_document_of_an_empty_total_is_a_hundred_percent() -> None:
    # given a job that names no images
    # when it is shown, then it does not divide by zero
    assert job_document(job(total=0), {})["percent"] == 100.0


def test_a_finished_job_document_has_its_duration_in_seconds() -> None:
    # given start and finish times 83.25 s apart across midnight
    # when it is shown
    timings = job_document(
        job(total=1, started_at="2025-01-01T23:59:00.000Z", finished_at="2025-01-02T00:00:23.250Z"), {}
    )["timings"]

    # then the duration is exact
    assert timings["duration_s"] == 83.25
    assert timings["started_at"] == "2025-01-01T23:59:00.000Z"


def test_an_unfinished_job_document_has_no_duration() -> None:
    # given a started job
    # when it is shown, then there is no duration yet
    timings = job_document(job(total=1, started_at="2025-01-01T00:00:00.000Z"), {})["timings"]
    assert "duration_s" not in timings
    assert timings["finished_at"] is None


def test_a_job_document_shows_parked_chunks_only_when_there_are_some() -> None:
    # given one job with parked chunks and one without
    # when both are shown, then only the first has the field
    assert job_document(job(total=1, parked=[3, 7]), {})["parked"] == [3, 7]
    assert "parked" not in job_document(job(total=1), {})


# --- plain / dynamo -----------------------------------------------------------------------------------------


def test_plain_turns_whole_decimals_into_ints_and_others_into_floats_recursively() -> None:
    # given DynamoDB numbers nested in maps and lists
    value = {"a": Decimal("3"), "b": [Decimal("0.5"), {"c": Decimal("1E+2")}], "d": "text", "e": True}

    # when made plain, then every number has its Python type
    result = plain(value)
    assert result == {"a": 3, "b": [0.5, {"c": 100}], "d": "text", "e": True}
    assert type(result["a"]) is int
    assert type(result["b"][1]["c"]) is int
    assert type(result["b"][0]) is float


def test_dynamo_turns_floats_into_exact_decimals_recursively_and_leaves_the_rest() -> None:
    # given floats nested in maps and lists, with ints, bools and strings
    value = {"score": 0.1, "top": [{"score": 0.30000000000000004}], "n": 7, "flag": False, "s": "x"}

    # when prepared for DynamoDB
    result = dynamo(value)

    # then floats are the Decimals of their repr, everything else unchanged
    assert result == {
        "score": Decimal("0.1"),
        "top": [{"score": Decimal("0.30000000000000004")}],
        "n": 7,
        "flag": False,
        "s": "x",
    }
    assert type(result["n"]) is int


def test_plain_undoes_dynamo() -> None:
    # given a nested value of floats and ints
    value = {"x": [0.25, 1, {"y": 2.5}]}

    # when it goes to DynamoDB's types and back, then it is the same value
    assert plain(dynamo(value)) == value


# --- new_batch_id -------------------------------------------------------------------------------------------


def test_batch_ids_are_unique() -> None:
    # given many ids made within the same second
    ids = [new_batch_id() for _ in range(2000)]

    # then no two are alike
    assert len(set(ids)) == len(ids)


def test_a_batch_id_is_a_valid_step_functions_execution_name() -> None:
    # given a new id
    batch_id = new_batch_id()

    # then it fits the execution name's length and character set, with room for an attempt suffix
    assert EXECUTION_NAME.match(batch_id)
    assert EXECUTION_NAME.match(f"{batch_id}-a99")
    assert len(batch_id) <= 80
