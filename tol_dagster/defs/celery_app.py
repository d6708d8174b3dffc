"""The Celery side of `TOL_EXECUTOR=celery`: the settings the run's executor sends with and the
app a `tol-dagster worker` serves, from one place so that both agree.

dagster-celery sends each step as an `execute_plan` task to the queue `TOL_CELERY_QUEUE` with the
routing key `<queue>.execute_plan`; a worker runs it with the code location loaded from its own
environment (the same `TOL_HOME`, on a shared file system) against the run's instance.

A worker that dies mid-step must lose nothing: tasks are acknowledged late (once done, not once
received), a worker takes one task at a time (prefetch 1, so a busy worker hoards none), and a
task whose worker process was lost goes back to the queue, where another worker takes it. On
RabbitMQ that is at once (the dead worker's connection closes); on Redis, once the message's
visibility timeout (an hour by default) has passed.
"""

from __future__ import annotations

from typing import Any

from tol_dagster.cluster_settings import BROKER_VAR, ClusterSettings, mask, require_extra
from tol_dagster.errors import ServiceUnreachable

#: Seconds to wait for the broker before saying it is down.
BROKER_TIMEOUT_S = 5.0


def celery_config(cluster: ClusterSettings) -> dict[str, Any]:
    """The Celery settings (dagster-celery's `config_source`, over its defaults) of the
    executor and the workers."""
    return {
        "task_default_queue": cluster.celery_queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
    }


def worker_app(cluster: ClusterSettings) -> Any:
    """The Celery app a worker serves: dagster-celery's, with our broker, backend and settings,
    and its queue bound to the routing key dagster-celery sends with."""
    executor = require_extra("dagster_celery.executor").CeleryExecutor.for_cli(
        broker=cluster.celery_broker,
        backend=cluster.celery_backend,
        config_source=celery_config(cluster),
    )
    app = require_extra("dagster_celery.make_app").make_app(executor.app_args())
    kombu = require_extra("kombu")
    queue = cluster.celery_queue
    app.conf.task_queues = [
        kombu.Queue(queue, kombu.Exchange(queue, "direct"), routing_key=f"{queue}.execute_plan")
    ]
    require_extra("dagster_celery.tasks").create_task(app)
    return app


def check_consumers(url: str, queue: str) -> None:
    """Raise `ServiceUnreachable` (exit 3) when no worker consumes `queue`: dagster-celery then
    waited for one forever, silent and deaf to Ctrl-C, and its task ran whenever a worker came.
    RabbitMQ counts a queue's consumers; on Redis, which cannot, the workers are asked which
    queues they serve (Celery's remote control: a second, `INSPECT_TIMEOUT_S`, per run)."""
    if url.startswith(("amqp://", "pyamqp://")):
        consumers = _queue_consumers(url, queue)
    elif url.startswith(("redis://", "rediss://")):
        consumers = _workers_serving(url, queue)
    else:
        return
    if not consumers:
        raise ServiceUnreachable(
            f"no `tol-dagster worker` serves the Celery queue {queue!r} on {mask(url)}: start "
            "one with the same TOL_CELERY_QUEUE (and broker), or run with TOL_EXECUTOR=in_process"
        )


#: Seconds the workers have to say which queues they serve (all that answer within it count).
INSPECT_TIMEOUT_S = 1.0


def _queue_consumers(url: str, queue: str) -> int:
    """The consumers RabbitMQ counts on `queue` (0 if no worker ever declared it)."""
    kombu = require_extra("kombu")
    with kombu.Connection(url, connect_timeout=BROKER_TIMEOUT_S) as connection:
        try:
            _, _, consumers = connection.default_channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:  # no such queue: no worker ever declared it
            return 0
    return int(consumers)


def _workers_serving(url: str, queue: str) -> int:
    """The workers that answer, within `INSPECT_TIMEOUT_S`, that they consume `queue`."""
    app = require_extra("celery").Celery(broker=url)
    try:
        answers = app.control.inspect(timeout=INSPECT_TIMEOUT_S).active_queues() or {}
    finally:
        app.close()
    return sum(any(q.get("name") == queue for q in queues) for queues in answers.values())


def check_broker(url: str) -> None:
    """Raise `ServiceUnreachable` (exit 3), naming the broker, unless it accepts a connection."""
    kombu = require_extra("kombu")
    try:
        with kombu.Connection(url, connect_timeout=BROKER_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises the transport's own errors
        raise ServiceUnreachable(
            f"the Celery broker {mask(url)} is not reachable ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); start it (and `tol-dagster worker`s) or fix "
            f"{BROKER_VAR}"
        ) from None
