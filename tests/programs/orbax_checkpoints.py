"""A JAX job that checkpoints with orbax into a revfs mount, rotating them away
(CheckpointManager, max_to_keep=2), then restores every step it ever saved, with
orbax itself, from the paths `revfs checkpoints` lists.

usage: orbax_checkpoints.py REVFS MOUNT STEPS
Prints one JSON line: {"saved": [...], "live": [...], "restored": [...]}; exits 1
on any mismatch.
"""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

revfs, mount, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = os.path.join(mount, "orbax-run")


def state(step):
    """A small train state whose every value depends on the step."""
    return {
        "params": {
            "w": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64) * (step + 1),
            "b": jnp.full((64,), step, dtype=jnp.float32),
        },
        "opt": {"count": jnp.array(step, dtype=jnp.int32)},
    }


options = ocp.CheckpointManagerOptions(max_to_keep=2)
with ocp.CheckpointManager(root, options=options) as mngr:
    for step in range(steps):
        mngr.save(step, args=ocp.args.StandardSave(state(step)))
    mngr.wait_until_finished()
    live = sorted(mngr.all_steps())

out = subprocess.run([revfs, "checkpoints", mount, "--json"], check=True,
                     capture_output=True, text=True).stdout
listed = [c for c in json.loads(out) if c["directory"].startswith("orbax-run/")]
restored, bad = [], []
for c in listed:
    step = c["step"]
    got = ocp.StandardCheckpointer().restore(os.path.join(c["path"], "default"))
    want = state(step)
    same = all(
        np.array_equal(np.asarray(got[k][n]), np.asarray(want[k][n]))
        for k in want for n in want[k]
    )
    (restored if same else bad).append(step)
print(json.dumps({"saved": list(range(steps)), "live": live, "restored": sorted(restored),
                  "bad": bad, "listed": [(c["step"], c["deleted"]) for c in listed]}))
sys.exit(0 if not bad and sorted(restored) == list(range(steps)) else 1)
