"""
Signals the job model sends, declared as django-q2 declares its own. The
model imports only this leaf module, and the modules that act on a change
listen (connected in JobsConfig.ready()): so the model imports none of them.
"""

from django.dispatch import Signal

# args: job (the instance, its fields as written), status (the new one).
# Sent by transition() inside its transaction, once the UPDATE matched.
job_status_changed = Signal()

# args: job_id. Sent after a running job's progress write.
job_progressed = Signal()
