#!/usr/bin/env python3
"""Load Kubernetes-like keys into a throwaway etcd through its JSON gRPC gateway.

Used by bench/make-snapshot.sh; stdlib only. Keys look like the ones kube-apiserver writes
(/registry/pods/<ns>/<name>, /registry/minions/<name>, ...); values look like its objects:
"k8s\\0"-prefixed protobuf-ish records for built-in kinds, JSON for CRDs, mostly compressible
text with random uids, resourceVersions, digests and base64 blobs (secrets, binaryData).

Phase 1 writes new keys until the db reaches (1 - OVERWRITE) * target, phase 2 overwrites
existing keys (hot kinds more often) until the target, so the db carries history.
Batched: many puts per txn, several connections. Prints a JSON summary on stdout.
"""
import argparse
import base64
import http.client
import json
import os
import random
import sys
import threading
import time

NAMESPACES = (["kube-system", "kube-public", "default", "gke-system", "monitoring", "logging",
               "ingress-nginx", "cert-manager", "istio-system", "argocd"]
              + ["team-%s" % w for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
                                         "golf", "hotel", "india", "juliet", "kilo", "lima")]
              + ["app-%02d" % i for i in range(18)])

# resource, key prefix, namespaced, count weight, size range KB (log-uniform), style
RESOURCES = [
    ("pods", "/registry/pods", True, 30, (3, 20), "pb"),
    ("replicasets", "/registry/replicasets", True, 8, (2, 8), "pb"),
    ("deployments", "/registry/deployments", True, 4, (3, 12), "pb"),
    ("services", "/registry/services/specs", True, 4, (1, 3), "pb"),
    ("endpointslices", "/registry/endpointslices", True, 4, (1, 8), "pb"),
    ("configmaps", "/registry/configmaps", True, 8, (1, 50), "cm"),
    ("secrets", "/registry/secrets", True, 7, (1, 50), "secret"),
    ("events", "/registry/events", True, 15, (1, 2), "pb"),
    ("leases", "/registry/leases", True, 2, (1, 1.5), "pb"),
    ("serviceaccounts", "/registry/serviceaccounts", True, 4, (1, 2), "pb"),
    ("controllerrevisions", "/registry/controllerrevisions", True, 3, (3, 20), "pb"),
    ("jobs", "/registry/jobs", True, 2, (2, 6), "pb"),
    ("roles", "/registry/roles", True, 2, (1, 3), "pb"),
    ("rolebindings", "/registry/rolebindings", True, 2, (1, 3), "pb"),
    ("customresourcedefinitions", "/registry/apiextensions.k8s.io/customresourcedefinitions",
     False, 1, (20, 50), "json"),
    ("certificates", "/registry/cert-manager.io/certificates", True, 1, (2, 6), "json"),
    ("clusterroles", "/registry/clusterroles", False, 1, (1, 8), "pb"),
    ("clusterrolebindings", "/registry/clusterrolebindings", False, 1, (1, 3), "pb"),
    ("nodes", "/registry/minions", False, 0.3, (5, 15), "pb"),
]
HOT = {"pods", "leases", "endpointslices", "nodes", "deployments", "replicasets", "configmaps"}

WORDS = ("""app name namespace image container port protocol TCP UDP env value valueFrom
secretKeyRef configMapKeyRef fieldRef fieldPath metadata labels annotations spec status
template selector matchLabels replicas strategy RollingUpdate maxSurge maxUnavailable
resources limits requests cpu memory 100m 250m 500m 128Mi 256Mi 1Gi livenessProbe
readinessProbe httpGet path /healthz /readyz initialDelaySeconds periodSeconds
timeoutSeconds failureThreshold volumeMounts mountPath readOnly true false volumes
emptyDir projected serviceAccountToken expirationSeconds 3607 kube-api-access
securityContext runAsNonRoot runAsUser 65534 allowPrivilegeEscalation capabilities drop ALL
nodeSelector kubernetes.io/os linux tolerations key operator Exists effect NoSchedule
NoExecute tolerationSeconds 300 affinity podAntiAffinity topologyKey hostname
conditions type Ready Initialized ContainersReady PodScheduled lastTransitionTime
lastProbeTime null phase Running Succeeded hostIP podIP podIPs startTime
containerStatuses restartCount started imageID containerID ready state running startedAt
qosClass Burstable BestEffort Guaranteed dnsPolicy ClusterFirst restartPolicy Always
schedulerName default-scheduler terminationGracePeriodSeconds 30 managedFields manager
kubectl-client-side-apply kube-controller-manager kubelet operation Update Apply
apiVersion v1 apps/v1 fieldsType FieldsV1 fieldsV1 f:metadata f:labels f:spec
f:containers f:status f:conditions ownerReferences controller blockOwnerDeletion uid
kind Pod ReplicaSet Deployment Service ConfigMap Secret generateName pod-template-hash
app.kubernetes.io/name app.kubernetes.io/instance app.kubernetes.io/version
app.kubernetes.io/managed-by Helm helm.sh/chart component tier control-plane
prometheus.io/scrape prometheus.io/port 9090 8080 443 6443 2379 2380 10250 clusterIP
ClusterIP NodePort LoadBalancer sessionAffinity None ipFamilies IPv4 ipFamilyPolicy
SingleStack targetPort endpoints addresses nodeName zone topology.kubernetes.io/zone
us-central1-a us-central1-b us-central1-c args command --v=2 --logtostderr
--config=/etc/config/config.yaml --metrics-bind-address=0.0.0.0:8080 /bin/sh -c exec
gcr.io registry.k8s.io docker.io quay.io nginx envoy coredns etcd kube-proxy
metrics-server prometheus grafana fluent-bit cert-manager-controller webhook cainjector
level info warn debug timeout 30s 5m retries server listen upstream proxy_pass location
worker_processes auto keepalive_timeout 65 gzip on include mime.types log_format main
access_log error_log scrape_configs job_name kubernetes-pods relabel_configs
source_labels action keep replace regex target_label __address__ __metrics_path__
""").split()

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def build_corpus(rng, size):
    """Pseudo-YAML/JSON text with a k8s vocabulary: compressible, but not one repeated block."""
    out, n = [], 0
    while n < size:
        depth = rng.randint(0, 5)
        k = rng.choice(WORDS)
        nv = rng.randint(1, 4)
        v = " ".join(rng.choice(WORDS) for _ in range(nv))
        if rng.random() < 0.15:
            v += "-" + "".join(rng.choice(ALNUM) for _ in range(rng.randint(4, 10)))
        if rng.random() < 0.1:
            v = str(rng.randint(0, 100000))
        line = '%s"%s": "%s",\n' % ("  " * depth, k, v)
        out.append(line)
        n += len(line)
    return "".join(out).encode()


class Gen:
    def __init__(self, seed, corpus):
        self.rng = random.Random(seed)
        self.corpus = corpus
        self.rv = 1000000 + self.rng.randint(0, 10 ** 6)

    def rhex(self, n):
        return os.urandom((n + 1) // 2).hex()[:n]

    def uid(self):
        h = os.urandom(16).hex()
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def name(self, res):
        r = self.rng
        base = r.choice(WORDS).strip("-/.:") or "app"
        base = "".join(c for c in base.lower() if c.isalnum() or c == "-")[:20] or "app"
        if res in ("pods",):
            return "%s-%s-%s" % (base, self.rhex(10), self.rhex(5))
        if res in ("replicasets", "controllerrevisions"):
            return "%s-%s" % (base, self.rhex(10))
        if res == "events":
            return "%s.%s" % (base, self.rhex(16))
        if res == "nodes":
            return "node-%s-%s" % (r.choice(("pool-a", "pool-b", "gpu")), self.rhex(6))
        if res == "secrets" and r.random() < 0.4:
            return "sh.helm.release.v1.%s.v%d" % (base, r.randint(1, 40))
        return "%s-%s" % (base, self.rhex(5))

    def text(self, n):
        """n bytes of corpus text with random tokens (container IDs, digests) sprinkled in."""
        r, c = self.rng, self.corpus
        parts, got = [], 0
        while got < n:
            seg = min(n - got, r.randint(512, 4096))
            off = r.randrange(0, len(c) - seg)
            parts.append(c[off:off + seg])
            got += seg
            if r.random() < 0.5:
                tok = b'"containerID": "containerd://' + self.rhex(64).encode() + b'",\n'
                parts.append(tok)
                got += len(tok)
        return b"".join(parts)[:n]

    def b64blob(self, n):
        """base64 of random bytes, n output bytes (certs, keys, helm release payloads)."""
        return base64.b64encode(os.urandom(n * 3 // 4 + 3))[:n]

    def meta(self, res, ns, name):
        self.rv += self.rng.randint(1, 50)
        return ('{"name":"%s","namespace":"%s","uid":"%s","resourceVersion":"%d",'
                '"generation":%d,"creationTimestamp":"2024-%02d-%02dT%02d:%02d:%02dZ",'
                '"labels":{"app":"%s","pod-template-hash":"%s"},'
                '"annotations":{"checksum/config":"%s"}}' % (
                    name, ns or "", self.uid(), self.rv, self.rng.randint(1, 30),
                    self.rng.randint(1, 12), self.rng.randint(1, 28), self.rng.randint(0, 23),
                    self.rng.randint(0, 59), self.rng.randint(0, 59), name.split("-")[0],
                    self.rhex(10), self.rhex(64))).encode()

    def value(self, res, style, ns, name, size):
        m = self.meta(res, ns, name)
        if style == "json":
            head = b'{"apiVersion":"example.io/v1","kind":"%s","metadata":' % res.encode() + m + b',"spec":{'
            body = self.text(max(0, size - len(head) - 2))
            return head + body + b"}}"
        # protobuf-ish: magic, then length-prefixed fields
        head = b"k8s\x00\n\x0f\n\x02v1\x12\x09" + res[:9].encode().ljust(9, b"_") + b"\x12" + \
            len(m).to_bytes(2, "big") + m
        rest = max(0, size - len(head))
        if style == "secret":
            # helm release secrets are base64(gzip(...)): essentially random; TLS/SA secrets
            # are base64 PEM with a little structure around them.
            rnd = int(rest * self.rng.uniform(0.7, 0.95))
            body = b"\x1a" + self.text(rest - rnd) + b"\x22" + self.b64blob(rnd)
        elif style == "cm":
            rnd = int(rest * 0.1) if self.rng.random() < 0.2 else 0  # binaryData sometimes
            body = b"\x1a" + self.text(rest - rnd) + (b"\x2a" + self.b64blob(rnd) if rnd else b"")
        else:
            body = b"\x1a" + self.text(rest)
        return head + body


class Client:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = None

    def post(self, path, obj, timeout=300):
        body = json.dumps(obj).encode()
        for attempt in range(5):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
                self.conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError("%s: HTTP %d: %s" % (path, resp.status, data[:300]))
                return json.loads(data)
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self.conn = None
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
                sys.stderr.write("retrying %s after %s\n" % (path, e))


def b64(b):
    return base64.b64encode(b).decode()


class Loader:
    def __init__(self, args):
        self.a = args
        self.target = args.target_mb * 1024 * 1024
        self.phase1 = int(self.target * (1 - args.overwrite))
        self.keys = []              # (resource index, key, size)
        self.lock = threading.Lock()
        self.bytes_put = 0
        self.puts = 0
        self.overwrites = 0
        self.phase = 1
        self.stop = False
        self.err = None
        self.db_size = 0
        rng = random.Random(args.seed)
        t = time.time()
        self.corpus = build_corpus(rng, args.corpus_mb * 1024 * 1024)
        sys.stderr.write("corpus %d MiB built in %.1fs\n" % (args.corpus_mb, time.time() - t))
        self.weights = [r[3] for r in RESOURCES]

    def status(self, cl):
        st = cl.post("/v3/maintenance/status", {})
        return int(st.get("dbSize", 0))

    def worker(self, wid):
        cl = Client("127.0.0.1", self.a.port)
        g = Gen(self.a.seed * 1000 + wid, self.corpus)
        r = g.rng
        try:
            while not self.stop:
                ops, nbytes, batch, seen = [], 0, [], set()
                phase = self.phase
                while nbytes < self.a.batch_kb * 1024 and len(ops) < self.a.batch_ops:
                    if phase == 2 and self.keys and r.random() < 0.97:
                        # overwrite: hot kinds 70% of the time
                        for _ in range(8):
                            ri, key, sz = self.keys[r.randrange(len(self.keys))]
                            if RESOURCES[ri][0] in HOT or r.random() < 0.3:
                                break
                        res = RESOURCES[ri]
                        sz = max(256, int(sz * r.uniform(0.9, 1.1)))
                        parts = key.rsplit("/", 2)
                        ns = parts[-2] if res[2] else ""
                        val = g.value(res[0], res[5], ns, parts[-1], sz)
                        batch.append(None)
                    else:
                        ri = r.choices(range(len(RESOURCES)), self.weights)[0]
                        res = RESOURCES[ri]
                        lo, hi = res[4]
                        sz = int(1024 * lo * (hi / lo) ** r.random())
                        ns = r.choice(NAMESPACES) if res[2] else ""
                        name = g.name(res[0])
                        key = "%s/%s%s" % (res[1], ns + "/" if ns else "", name)
                        val = g.value(res[0], res[5], ns, name, sz)
                        batch.append((ri, key, sz))
                    if key in seen:  # etcd refuses a txn that puts one key twice
                        batch.pop()
                        continue
                    seen.add(key)
                    ops.append({"request_put": {"key": b64(key.encode()), "value": b64(val)}})
                    nbytes += len(val) + len(key)
                cl.post("/v3/kv/txn", {"success": ops})
                with self.lock:
                    self.bytes_put += nbytes
                    self.puts += len(ops)
                    for b in batch:
                        if b is None:
                            self.overwrites += 1
                        else:
                            self.keys.append(b)
        except Exception as e:  # noqa: BLE001 - report and stop everyone
            self.err = e
            self.stop = True

    def run(self):
        cl = Client("127.0.0.1", self.a.port)
        t0 = time.time()
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(self.a.concurrency)]
        for t in threads:
            t.start()
        last = 0
        while not self.stop:
            time.sleep(0.25)
            self.db_size = self.status(cl)
            if self.phase == 1 and self.db_size >= self.phase1:
                self.phase = 2
                sys.stderr.write("phase 2 (overwrites) at db %d MiB, %d keys\n"
                                 % (self.db_size >> 20, len(self.keys)))
            if self.db_size >= self.target:
                self.stop = True
            if time.time() - last >= 10 or self.stop:
                last = time.time()
                el = time.time() - t0
                sys.stderr.write("  %5.0fs db %5d/%d MiB  keys %d  puts %d  %.1f MB/s put\n" % (
                    el, self.db_size >> 20, self.target >> 20, len(self.keys), self.puts,
                    self.bytes_put / el / 1e6))
        for t in threads:
            t.join()
        if self.err:
            raise SystemExit("load failed: %s" % self.err)
        cnt = cl.post("/v3/kv/range", {"key": b64(b"/registry/"), "range_end": b64(b"/registry0"),
                                        "count_only": True})
        st = cl.post("/v3/maintenance/status", {})
        return {
            "keys": int(cnt.get("count", 0)),
            "puts": self.puts,
            "overwrites": self.overwrites,
            "bytes_put": self.bytes_put,
            "db_size": int(st.get("dbSize", 0)),
            "revision": int(st.get("header", {}).get("revision", 0)),
            "seconds": round(time.time() - t0, 1),
        }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--target-mb", type=int, default=1024)
    p.add_argument("--overwrite", type=float, default=0.25,
                   help="fraction of the target db size written as overwrites")
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--batch-kb", type=int, default=1024)
    p.add_argument("--batch-ops", type=int, default=1000)
    p.add_argument("--corpus-mb", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keys-out", help="write the live keys (resource index, key, size; one per "
                   "line, tab-separated) here, for etcd_churn.py")
    a = p.parse_args()
    loader = Loader(a)
    summary = loader.run()
    if a.keys_out:
        with open(a.keys_out, "w") as f:
            for ri, key, size in loader.keys:
                f.write("%d\t%s\t%d\n" % (ri, key, size))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
