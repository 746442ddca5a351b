"""The admin as the tests visit it."""

CHANGELIST = "/admin/jobs/videogenerationjob/"
