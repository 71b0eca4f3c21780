#!/usr/bin/env python3
"""One round of Kubernetes-like write load on an etcd that bench/etcd_load.py filled.

Used by bench/storage_over_time.sh; stdlib only. Reuses etcd_load's key and value generators.
The live keys (resource index, key, value size) live in a state file that `etcd_load.py
--keys-out` starts and each round rewrites, oldest first.

A round stands for the writes the apiserver makes between two of its compactions (5 min):
- REWRITE of the live keys get a new value (size within 10% of the old one), picked without
  replacement with a per-kind weight: leases (renewed every 10 s) are nearly all picked and
  get several puts, endpointslices, nodes, events, pods more than deployments and
  configmaps, and secrets, roles, CRDs and the like seldom;
- CREATE new keys, of the loader's kinds with events, pods, jobs and replicasets boosted;
- DELETE keys: half the oldest events (their 1 h TTL ran out), the rest mostly pods,
  replicasets, jobs, events and helm release secrets.
Puts and deletes go in batched txns (never one key twice in a txn) over a few connections.
Prints a JSON summary on stdout.
"""
import argparse
import heapq
import json
import os
import queue
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from etcd_load import NAMESPACES, RESOURCES, Client, Gen, b64, build_corpus  # noqa: E402

KIND = {r[0]: i for i, r in enumerate(RESOURCES)}
# kind: (rewrite weight, puts per picked key); anything not named: (0.25, 1)
REWRITE = {"leases": (40, 3), "endpointslices": (4, 1), "nodes": (4, 1), "events": (2, 1),
           "pods": (2, 1), "deployments": (1.5, 1), "replicasets": (1.5, 1),
           "configmaps": (1, 1)}
# creation boost over the loader's count weights; anything not named: 0.3
CREATE = {"events": 4, "pods": 2, "jobs": 2, "replicasets": 1.5, "controllerrevisions": 1,
          "endpointslices": 1, "secrets": 0.5}
# deletion weight of a random key, besides the expired events; anything not named: 0.05
DELETE = {"pods": 4, "replicasets": 2, "jobs": 2, "events": 2, "secrets": 0.5,
          "controllerrevisions": 1, "endpointslices": 0.5}
assert set(REWRITE) | set(CREATE) | set(DELETE) <= set(KIND)


def read_state(path):
    keys = []
    with open(path) as f:
        for line in f:
            ri, key, size = line.rstrip("\n").split("\t")
            keys.append((int(ri), key, int(size)))
    return keys


def write_state(path, keys):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for ri, key, size in keys:
            f.write("%d\t%s\t%d\n" % (ri, key, size))
    os.replace(tmp, path)


def weighted_sample(rng, items, weight, k):
    """k distinct items, each picked with probability proportional to weight(item)."""
    k = min(k, len(items))
    return heapq.nlargest(k, items, key=lambda it: rng.random() ** (1.0 / weight(it)))


def plan(rng, gen, keys, a):
    n = len(keys)
    idx = list(range(n))
    kind = lambda i: RESOURCES[keys[i][0]][0]  # noqa: E731
    # deletes: expired events (oldest first), then churny kinds
    n_del = int(n * a.delete)
    events = [i for i in idx if kind(i) == "events"]
    dead = set(events[:n_del // 2])
    rest = [i for i in idx if i not in dead]
    dead.update(weighted_sample(rng, rest, lambda i: DELETE.get(kind(i), 0.05), n_del - len(dead)))
    alive = [i for i in idx if i not in dead]
    picked = weighted_sample(rng, alive, lambda i: REWRITE.get(kind(i), (0.25, 1))[0],
                             int(n * a.rewrite))
    ops = [("del", i) for i in dead]
    sizes = {}
    for i in picked:
        ri, key, size = keys[i]
        for _ in range(REWRITE.get(kind(i), (0.25, 1))[1]):
            size = max(256, int(size * rng.uniform(0.9, 1.1)))
            ops.append(("put", ri, key, size))
        sizes[i] = size
    weights = [r[3] * CREATE.get(r[0], 0.3) for r in RESOURCES]
    new = []
    for _ in range(int(n * a.create)):
        ri = rng.choices(range(len(RESOURCES)), weights)[0]
        res = RESOURCES[ri]
        lo, hi = res[4]
        size = int(1024 * lo * (hi / lo) ** rng.random())
        ns = rng.choice(NAMESPACES) if res[2] else ""
        key = "%s/%s%s" % (res[1], ns + "/" if ns else "", gen.name(res[0]))
        new.append((ri, key, size))
        ops.append(("put", ri, key, size))
    rng.shuffle(ops)
    survivors = [(ri, key, sizes.get(i, size)) for i, (ri, key, size) in enumerate(keys)
                 if i not in dead]
    # keys from a freshly generated name can collide with a live one: it is then a rewrite
    live = {k for _, k, _ in survivors}
    for t in new:
        if t[1] not in live:
            live.add(t[1])
            survivors.append(t)
    return ops, survivors, len(dead), len(picked), len(new)


def pack(ops, keys, batch_bytes, batch_ops):
    """Txns of ops with no key twice in one txn (etcd refuses that); repeats move on."""
    txns, pending = [], ops
    while pending:
        later, cur, seen, nbytes = [], [], set(), 0
        for op in pending:
            key = keys[op[1]][1] if op[0] == "del" else op[2]
            if key in seen:
                later.append(op)
                continue
            if cur and (nbytes >= batch_bytes or len(cur) >= batch_ops):
                txns.append(cur)
                cur, seen, nbytes = [], set(), 0
            seen.add(key)
            cur.append(op)
            nbytes += op[3] if op[0] == "put" else 0
        if cur:
            txns.append(cur)
        pending = later
    return txns


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", required=True, help="live keys, from etcd_load.py --keys-out")
    p.add_argument("--round", type=int, required=True, help="round number (seeds the round)")
    p.add_argument("--rewrite", type=float, default=0.10, help="fraction of live keys rewritten")
    p.add_argument("--create", type=float, default=0.02, help="new keys, fraction of live keys")
    p.add_argument("--delete", type=float, default=0.02, help="deleted keys, fraction of live keys")
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--batch-kb", type=int, default=1024)
    p.add_argument("--batch-ops", type=int, default=1000)
    p.add_argument("--corpus-mb", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()

    t0 = time.time()
    keys = read_state(a.state)
    seed = a.seed * 100003 + a.round
    rng = random.Random(seed)
    ops, survivors, n_del, n_rew, n_new = plan(rng, Gen(seed, b""), keys, a)
    txns = pack(ops, keys, a.batch_kb * 1024, a.batch_ops)
    corpus = build_corpus(random.Random(a.seed), a.corpus_mb * 1024 * 1024)

    work = queue.Queue()
    for t in txns:
        work.put(t)
    totals = {"puts": 0, "deletes": 0, "bytes_put": 0}
    lock = threading.Lock()
    errors = []

    def worker(wid):
        cl = Client("127.0.0.1", a.port)
        g = Gen(seed * 1000 + wid, corpus)
        try:
            while not errors:
                try:
                    txn = work.get_nowait()
                except queue.Empty:
                    return
                body, puts, dels, nbytes = [], 0, 0, 0
                for op in txn:
                    if op[0] == "del":
                        body.append({"request_delete_range": {"key": b64(keys[op[1]][1].encode())}})
                        dels += 1
                        continue
                    _, ri, key, size = op
                    res = RESOURCES[ri]
                    parts = key.rsplit("/", 2)
                    ns = parts[-2] if res[2] else ""
                    val = g.value(res[0], res[5], ns, parts[-1], size)
                    body.append({"request_put": {"key": b64(key.encode()), "value": b64(val)}})
                    puts += 1
                    nbytes += len(key) + len(val)
                cl.post("/v3/kv/txn", {"success": body})
                with lock:
                    totals["puts"] += puts
                    totals["deletes"] += dels
                    totals["bytes_put"] += nbytes
        except Exception as e:  # noqa: BLE001 - report and stop everyone
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("round %d failed: %s" % (a.round, errors[0]))
    write_state(a.state, survivors)
    st = Client("127.0.0.1", a.port).post("/v3/maintenance/status", {})
    print(json.dumps(dict(
        totals, round=a.round, keys_before=len(keys), keys=len(survivors), rewritten=n_rew,
        created=n_new, deleted=n_del, txns=len(txns),
        revision=int(st.get("header", {}).get("revision", 0)),
        db_size=int(st.get("dbSize", 0)), db_size_in_use=int(st.get("dbSizeInUse", 0)),
        seconds=round(time.time() - t0, 1))))


if __name__ == "__main__":
    main()
