"""Run one Ray task per work item with a cap on tasks in flight, a progress bar, and results in input order.

    entries = run_tasks(write_shard, [(cfg, "train", 0, 256, out), ...], desc="data x", max_in_flight=2)

Without a running Ray the items run in this process, one after another: the same function on the same arguments,
so the same results (a small build is faster so than through a Ray started for it: `metaicl data build`).

The cap (default: the cluster's CPUs) bounds memory and never changes what the tasks compute. A ConfigError raised
inside a task (a transform whose target a batch cannot reach, say) comes back as that ConfigError, not as Ray's
wrapper, so the CLI prints one line.
"""
from __future__ import annotations

from typing import Callable, Sequence

from metaicl.core.errors import ConfigError


def run_tasks(fn: Callable, items: Sequence[tuple], desc: str, max_in_flight: int | None = None,
              progress: bool = True) -> list:
    import ray
    from tqdm import tqdm

    if not ray.is_initialized():
        with tqdm(items, desc=desc, unit="shard", disable=not progress, leave=False) as bar:
            return [fn(*args) for args in bar]
    task = ray.remote(num_cpus=1)(fn)
    limit = max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))
    todo = list(enumerate(items))
    pending: dict = {}
    results: list = [None] * len(todo)
    bar = tqdm(total=len(todo), desc=desc, unit="shard", disable=not progress, leave=False)
    try:
        while todo or pending:
            while todo and len(pending) < limit:
                position, args = todo.pop(0)
                pending[task.remote(*args)] = position
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
            bar.update(len(done))
    except Exception as err:
        # The tasks still in flight finish (at most `limit` of them), their results unused. Cancelling them instead
        # aborted the whole driver process when a cancel crossed a task that was just finishing (Ray 2.60:
        # "Check failed: ... Tried to complete task that was not pending", seen once in this project's test suite).
        if pending:
            ray.wait(list(pending), num_returns=len(pending))
        if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, ConfigError):
            raise err.cause from None
        raise
    finally:
        bar.close()
    return results
