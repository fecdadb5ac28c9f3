"""The chat's background job: answers whose process died are ended (chat/recovery.py).

Every minute, in whichever job worker takes it (the queueing lock keeps one in the queue), so a
person who never reloads still finds the answer ended, and its audit entry written, within a
minute of the cut-off.
"""

from asgiref.sync import sync_to_async
from procrastinate.contrib.django import app

from chat import recovery


@app.periodic(cron="* * * * *")
@app.task(name="chat.interrupt_orphaned_answers", queueing_lock="interrupt_orphaned_answers")
async def interrupt_orphaned_answers(timestamp):
    await sync_to_async(recovery.interrupt_orphans, thread_sensitive=False)()
