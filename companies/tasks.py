from celery import shared_task

from gz_console.celery import CompanyTask


@shared_task(name="companies.schema_census", base=CompanyTask, acks_late=True)
def schema_census(company_id: int) -> dict:
    """Which schema the task ran in and how many endpoints it holds (operations check)."""
    from companies.selectors import company_schema_census

    return company_schema_census()


# H6: the import's two steps. acks_late: a worker lost mid-import re-runs the job, which is safe
# because an import is one transaction and a finished job is not run again.
@shared_task(name="companies.import_validate", acks_late=True)
def import_validate(job_id: int) -> str:
    from companies.imports import import_validate as validate
    from companies.models import ImportJob

    return validate(job=ImportJob.objects.select_related("company").get(pk=job_id)).status


@shared_task(name="companies.import_apply", acks_late=True)
def import_apply(job_id: int) -> str:
    from companies.imports import import_apply as apply
    from companies.models import ImportJob

    return apply(job=ImportJob.objects.select_related("company").get(pk=job_id)).status
