"""A multi-process checkpoint writer laid out as torch.distributed.checkpoint
lays one out: every rank writes its shard `__RANK_0.distcp` into `ckpt/step_N/`
(in pieces, with fsync), all ranks meet at a barrier, and rank 0 writes
`.metadata` last (through a temporary name renamed into place, as DCP does);
then it deletes the checkpoint two steps back (the job's rotation).

usage: rank_writer.py MOUNT RANKS STEPS SHARD_BYTES
Prints one JSON line: {"steps": N, "shards": {"step_K": {"__R_0.distcp": sha256}}}.
"""
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys

mount, ranks, steps, shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
root = os.path.join(mount, "ckpt")


def shard_bytes(step, rank):
    return random.Random(step * 1000 + rank).randbytes(shard)


def rank_main(rank, barrier):
    for step in range(steps):
        d = os.path.join(root, f"step_{step}")
        if rank == 0:
            os.makedirs(d)
        barrier.wait()
        data = shard_bytes(step, rank)
        with open(os.path.join(d, f"__{rank}_0.distcp"), "wb") as f:
            for i in range(0, len(data), 65536):
                f.write(data[i:i + 65536])
            f.flush()
            os.fsync(f.fileno())
        barrier.wait()
        if rank == 0:
            meta = {f"__{r}_0.distcp": hashlib.sha256(shard_bytes(step, r)).hexdigest()
                    for r in range(ranks)}
            tmp = os.path.join(d, ".metadata.tmp")
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.rename(tmp, os.path.join(d, ".metadata"))
            old = os.path.join(root, f"step_{step - 2}")
            if step >= 2:
                shutil.rmtree(old)
        barrier.wait()


if __name__ == "__main__":
    os.makedirs(root, exist_ok=True)
    barrier = mp.Barrier(ranks)
    procs = [mp.Process(target=rank_main, args=(r, barrier)) for r in range(ranks)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    if any(p.exitcode != 0 for p in procs):
        sys.exit(f"a rank failed: {[p.exitcode for p in procs]}")
    shards = {f"step_{s}": {f"__{r}_0.distcp": hashlib.sha256(shard_bytes(s, r)).hexdigest()
                            for r in range(ranks)} for s in range(steps)}
    print(json.dumps({"steps": steps, "shards": shards}))
