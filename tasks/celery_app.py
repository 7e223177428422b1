"""The Celery app, configured from Settings.

The default broker is embedded (`filesystem://` under data_dir, see tasks/embedded_broker.py): no
server to install. Redis and RabbitMQ are set by URL. The broker is only a doorbell: the database
says what is left to do, and a sweeper re-enqueues work whose message was lost (tasks/sweeper.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init

from product_studio.config import Settings, get_settings

EMBEDDED_TRANSPORT = "tasks.embedded_broker:Transport"


def broker_options(settings: Settings) -> dict:
    url = settings.broker_url
    if url.startswith("filesystem://"):
        root = Path(settings.data_dir) / "broker"
        for sub in ("queue", "claimed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # One folder both ways: producers and consumers share it. Polled every 50 ms: the default
        # one second caps an embedded broker at one task a second.
        return {"data_folder_in": str(root / "queue"), "data_folder_out": str(root / "queue"),
                "processed_folder": str(root / "claimed"), "control_folder": str(root / "control"),
                "polling_interval": 0.05}
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.broker_visibility_timeout}
    return {}


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("product_studio", broker=settings.broker_url,
                 include=["tasks.pipeline", "tasks.sweeper", "tasks.intake", "tasks.publishing"])
    app.conf.update(
        broker_transport_options=broker_options(settings),
        # kombu's own filesystem transport can hand a worker a message before it is written.
        broker_transport=EMBEDDED_TRANSPORT if settings.broker_url.startswith("filesystem://") else None,
        broker_connection_retry_on_startup=True,
        task_default_queue="cpu",
        task_acks_late=True,  # a task is acknowledged when done, not when received...
        task_reject_on_worker_lost=True,  # ...and requeued if its process dies
        worker_prefetch_multiplier=1,  # a worker holds one message beyond what it runs
        task_ignore_result=True,  # nobody waits on results: state lives in the database
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


app = make_app()


# --- stopping --------------------------------------------------------------------------------------
# A SIGTERM may reach the pool children too, not only the main process: systemd's default stop
# signals every process of the service, a terminal or `kill -- -PGID` the whole process group.
# Children killed by it cut their tasks short, and one that died while waiting for work could leave
# the pool's shared queue lock held, so that the main process, exiting, waited for that lock
# forever (billiard's Pool._help_stuff_finish; issue 17, item 7). So children ignore SIGTERM
# (billiard leaves an ignored signal ignored): the main process's warm shutdown lets each finish
# its task (time limits still apply), then stops them through the pool. A cold shutdown (SIGQUIT)
# waits for running tasks the same way; SIGKILL stops at once (acks_late and
# task_reject_on_worker_lost, or the sweeper on the embedded broker, hand their tasks back).


@worker_process_init.connect
def _fresh_handles(**_) -> None:
    """A prefork child: drop handles inherited from the parent (models load lazily, here), and
    leave SIGTERM to the main process (above)."""
    from product_studio import runtime

    runtime.reset()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
