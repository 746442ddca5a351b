"""The admin's date filter, and date look-ups typed into its URL, with dates that do not exist."""

import pytest

from tests.support.admin import CHANGELIST


@pytest.mark.parametrize(
    "query",
    ["submitted_at__gte=abc", "submitted_at__gte=2020-02-30", "submitted_at__lt=10000-01-01",
     "submitted_at__gte=" + "9" * 5000, "submitted_at__year=0", "submitted_at__year=10000",
     "submitted_at__year=abc", "submitted_at__year=" + "9" * 5000, "submitted_at__year=-1"],
)
def test_an_impossible_date_is_the_admins_bad_filter_answer_not_a_500(staff_client, make_job, query):
    make_job()

    response = staff_client.get(f"{CHANGELIST}?{query}")

    # Django's answer to a bad lookup: back to the list, flagged ?e=1.
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.parametrize(
    "query",
    ["submitted_at__year=2020&submitted_at__month=13", "submitted_at__year=2020&submitted_at__month=2&submitted_at__day=30"],
)
def test_a_day_or_month_no_calendar_has_lists_nothing(staff_client, make_job, query):
    make_job()

    response = staff_client.get(f"{CHANGELIST}?{query}")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_the_last_representable_year_still_lists_its_jobs(staff_client, make_job):
    from datetime import datetime, timezone

    job = make_job(submitted_at=datetime(9999, 6, 1, tzinfo=timezone.utc))

    for query in ["submitted_at__year=9999&submitted_at__month=6",
                  "submitted_at__gte=9999-06-01+00:00:00%2B00:00&submitted_at__lt=9999-07-01+00:00:00%2B00:00"]:
        response = staff_client.get(f"{CHANGELIST}?{query}")

        assert response.status_code == 200
        assert [row.pk for row in response.context["cl"].result_list] == [job.pk]
