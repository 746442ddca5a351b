"""
What changes jobs: submit, cancel, rerun and delete (lifecycle), bulk
actions, recovery of lost jobs, retention, checkpoints, and the storage and
outbound HTTP they use.
"""
