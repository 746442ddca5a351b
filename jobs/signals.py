"""
Signals the job model sends, declared as django-q2 declares its own. The
model imports only this leaf module; receivers connect in JobsConfig.ready().
"""

from django.dispatch import Signal

# args: job_id, status (the new status, or None for a progress write).
# Sent inside transition()'s transaction, and right after a progress write.
job_changed = Signal()
