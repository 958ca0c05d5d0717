"""The rollout engine, one module per job.

- `commands`: plan, create, status, and the operator's pause / resume / abort / approve;
- `dispatch`: start a rollout, dispatch a wave's pending devices as push batches;
- `push`: sign, store and publish one step's bundles to a batch of devices;
- `reports`: move devices by their reports;
- `evaluate`: commit healthy devices, the gate, bake, next wave, re-dispatch; the tick;
- `deadlines`: what the tick does with an overdue device: re-send its stage, or time it out;
- `rollback`: abort, send the rollback, end it;
- `view`: one rollout as the console shows it, read at a cost independent of its size.

Every function takes only the ports it uses (`RolloutDeps`, or `PushDeps` to push)
and is safe to run twice: rollout changes are guarded by the state they expect,
device transitions by the states they may come from, and a bundle is issued once per
(device, step) and re-sent byte for byte when a task runs again.
"""

from orchestrator.services.rollout.commands import (
    Plan,
    command,
    create_rollout,
    plan_rollout,
    rollout_status,
)
from orchestrator.services.rollout.deps import (
    PUSH_BATCH_SIZE,
    PushDeps,
    RolloutDeps,
    RolloutError,
    RolloutTasks,
    load,
)
from orchestrator.services.rollout.dispatch import dispatch_wave, start_rollout
from orchestrator.services.rollout.evaluate import (
    COMMIT_RESEND_SECONDS,
    commit_healthy,
    evaluate_rollout,
    tick_rollouts,
)
from orchestrator.services.rollout.push import push_batch
from orchestrator.services.rollout.reports import apply_reports
from orchestrator.services.rollout.rollback import abort_rollout, rollback_rollout
from orchestrator.services.rollout.view import (
    FAILED_PAGE_SIZE,
    RolloutSummary,
    RolloutView,
    rollout_summary,
    rollout_view,
)

__all__ = [
    "COMMIT_RESEND_SECONDS",
    "FAILED_PAGE_SIZE",
    "PUSH_BATCH_SIZE",
    "Plan",
    "PushDeps",
    "RolloutDeps",
    "RolloutError",
    "RolloutSummary",
    "RolloutTasks",
    "RolloutView",
    "abort_rollout",
    "apply_reports",
    "command",
    "commit_healthy",
    "create_rollout",
    "dispatch_wave",
    "evaluate_rollout",
    "load",
    "plan_rollout",
    "push_batch",
    "rollback_rollout",
    "rollout_status",
    "rollout_summary",
    "rollout_view",
    "start_rollout",
    "tick_rollouts",
]
