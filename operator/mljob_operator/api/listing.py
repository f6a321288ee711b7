"""The answer of `GET /v1/namespaces/{ns}/mljobs`: the jobs this operator knows in a
namespace, summarised for a jobs table (the anomaly explorer page's first view).

Kept apart from `api.results` because it is not a result of one job: it joins what the
controllers last wrote (state, last close) with two figures of each job's results (its
bucket count and highest bucket score), so a viewer sees which job to open without one
call per job. Paged as the apiserver pages a list (`limit`, `continue`): each job listed
costs a store row and possibly a SubjectAccessReview.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mljob_operator.api.results import Score
from mljob_operator.api.v1alpha1 import CloseRecord, JobState


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class JobSummary(_Wire):
    """One MLJob as the operator knows it."""

    name: str = Field(description="The MLJob's name.")
    state: JobState | None = Field(description="The status.state the operator last wrote.")
    closed: bool = Field(description="status.closed.")
    last_close: CloseRecord | None = Field(description="status.lastClose, if it ever closed.")
    max_anomaly_score: Score | None = Field(
        description="The highest bucket anomaly score of its results (interim included); "
        "null without results or when the caller may not read them (get mljobs/results)."
    )
    bucket_count: int | None = Field(
        ge=0, description="Bucket results stored; null when the caller may not read them."
    )


class JobList(_Wire):
    count: int = Field(ge=0, description="Jobs in this page.")
    jobs: list[JobSummary] = Field(description="By name.")
    continue_: str | None = Field(
        default=None,
        alias="continue",
        description="Pass as the `continue` parameter (with the same `limit`) for the next "
        "page; null on the last one. The apiserver's own token: it expires after a few "
        "minutes (410, list again).",
    )
    remaining_item_count: int | None = Field(
        default=None,
        ge=0,
        description="How many more MLJobs the apiserver counts after this page (an "
        "estimate, it may include jobs another operator reconciles); null when it gives none.",
    )
