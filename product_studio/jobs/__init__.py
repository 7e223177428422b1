"""The job service: what the doors call to record work, and the units the task runner executes.

    steps.py       Step: what should happen next (a stage and an id); the task layer enqueues it
    submit.py      door validation and recording: submit a job, regenerate a variant
    from_urls.py   a job from image URLs, recorded before fetching (the cut-out task fetches)
    stored.py      uploads checked by header and stored as they arrive (the cut-out task decodes)
    masks.py       touch-up: the admins' mask versions per photo, and re-rendering from them
    units.py       the task runner of the stage plan: cut-out, control images, variants, failures
    documents.py   what the API and completion callbacks say about a job and its variants
    completion.py  the signed completion callback's delivery
    recovery.py    lost work found from the database; which errors are permanent

The core never imports the doors: every function here returns the Steps to take next, and the
task layer (tasks/pipeline.py) turns them into Celery messages.
"""

from .steps import Step
from .submit import Submission, Upload, regenerate, submit

__all__ = ["Step", "Submission", "Upload", "regenerate", "submit"]
