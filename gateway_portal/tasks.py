"""Jobs that keep the job queue itself healthy (Procrastinate imports every app's tasks.py).

A worker that dies in the middle of a job (SIGKILL, a lost machine) leaves it "doing" for ever;
the others notice its heartbeat stopped and give the job back to the queue, so a webhook is not
lost with the process that was sending it.
"""

from procrastinate.contrib.django import app


@app.periodic(cron="* * * * *")
@app.task(name="gateway_portal.retry_stalled_jobs", queueing_lock="retry_stalled_jobs", pass_context=True)
async def retry_stalled_jobs(context, timestamp):
    manager = context.app.job_manager
    for job in await manager.get_stalled_jobs():
        await manager.retry_job(job)
