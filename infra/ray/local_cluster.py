"""A 2-node Ray cluster on 127.0.0.1 shaped like raycluster.yaml: a head that runs nothing
(no CPUs, no GPUs; Ray Client on --client-port) and one worker node. For trying the Ray
backend without Kubernetes; it runs until Ctrl-C or SIGTERM, then stops both nodes.

    .venv/bin/python infra/ray/local_cluster.py &
    .venv/bin/distillery run recipes/demo.yaml --set execution.backend=ray \
        --set execution.ray_address=ray://127.0.0.1:10001

`ray start --node-ip-address 127.0.0.1` swaps in the machine's routable address, and with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps it on loopback) `ray start --address`
refuses a second node; Ray's own `cluster_utils.Cluster` does both (as tests/raycluster.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "VLLM_NO_USAGE_STATS": "1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client-port", type=int, default=10001, help="Ray Client port (ray://127.0.0.1:PORT)")
    ap.add_argument("--worker-cpus", type=int, default=2)
    ap.add_argument("--worker-gpus", type=int, default=0, help="0 on a CPU machine: one engine per node")
    ap.add_argument("--agent-port", type=int, default=52365, help="the head's dashboard agent; the worker's is +1")
    ap.add_argument("--temp-dir", default="/tmp/distillery-ray-local", help="sockets, logs, session")
    args = ap.parse_args()
    os.environ.update(ENV)
    os.environ["RAY_TMPDIR"] = args.temp_dir  # Ray's files here, not /tmp/ray
    os.makedirs(args.temp_dir, exist_ok=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "node_ip_address": "127.0.0.1",
        "ray_client_server_port": args.client_port, "dashboard_agent_listen_port": args.agent_port,
        "include_dashboard": False})
    cluster.add_node(num_cpus=args.worker_cpus, num_gpus=args.worker_gpus, node_ip_address="127.0.0.1",
                     dashboard_agent_listen_port=args.agent_port + 1)
    cluster.wait_for_nodes()
    print(f"2 nodes up: ray://127.0.0.1:{args.client_port} (GCS {cluster.address}); Ctrl-C stops them", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    cluster.shutdown()


if __name__ == "__main__":
    main()
