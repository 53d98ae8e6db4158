"""A tiny initializer for the example's WorkspaceType `root:team`, on the `kubernetes` client.

It reads the initializing virtual-workspace URL from the WorkspaceType's status, watches the
workspaces waiting for it, gives each a `welcome` ConfigMap and removes its own initializer, so
the workspace becomes Ready. Run it next to `vwproxy serve`:

    python3 examples/team_initializer.py --kubeconfig <data dir>/admin.kubeconfig
"""

from __future__ import annotations

import argparse

import kubernetes

INITIALIZER = "root:team"
LC = ("core.kcp.io", "v1alpha1", "logicalclusters")


KUBECONFIG: list[str] = []  # credentials and trust come from this kubeconfig, when given


def client(host: str) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    if KUBECONFIG:
        kubernetes.config.load_kube_config(KUBECONFIG[0], client_configuration=config)
        config.refresh_api_key_hook = None  # it would put the kubeconfig's server back before each request
    config.host = host
    return kubernetes.client.ApiClient(config)


def initialize(vw_url: str, cluster: str) -> None:
    workspace = client(f"{vw_url}/clusters/{cluster}")
    kubernetes.client.CoreV1Api(workspace).create_namespaced_config_map(
        "default", {"metadata": {"name": "welcome"}, "data": {"initialized-by": INITIALIZER}})
    objects = kubernetes.client.CustomObjectsApi(workspace)
    lc = objects.get_cluster_custom_object(*LC, "cluster")
    remaining = [i for i in lc["status"]["initializers"] if i != INITIALIZER]
    objects.patch_cluster_custom_object_status(*LC, "cluster", {"status": {"initializers": remaining}})
    print(f"initialized {lc['metadata']['annotations'].get('kcp.io/path', cluster)}", flush=True)


def _kubeconfig_server(path: str) -> str:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(path, client_configuration=config)
    return str(config.host).split("/clusters/")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="a kubeconfig for the vwproxy (or kcp) front; its server's /clusters/... is replaced")
    parser.add_argument("--server", help="the front URL (default: the kubeconfig's server without its /clusters/... path)")
    parser.add_argument("--once", action="store_true", help="initialize what is waiting now, then exit")
    args = parser.parse_args()
    if args.kubeconfig:
        KUBECONFIG.append(args.kubeconfig)
    if not args.server and not args.kubeconfig:
        parser.error("give --kubeconfig (or --server for a server that takes anonymous callers)")
    server = args.server or _kubeconfig_server(args.kubeconfig)
    root = kubernetes.client.CustomObjectsApi(client(f"{server}/clusters/root"))
    wst = root.get_cluster_custom_object("tenancy.kcp.io", "v1alpha1", "workspacetypes", "team")
    vw_url = next(v["url"] for v in wst["status"]["virtualWorkspaces"] if v["type"] == "initializing")
    waiting = kubernetes.client.CustomObjectsApi(client(f"{vw_url}/clusters/*"))
    if args.once:
        for lc in waiting.list_cluster_custom_object(*LC)["items"]:
            initialize(vw_url, lc["metadata"]["annotations"]["kcp.io/cluster"])
        return
    for event in kubernetes.watch.Watch().stream(waiting.list_cluster_custom_object, *LC):
        if event["type"] == "ADDED":
            initialize(vw_url, event["object"]["metadata"]["annotations"]["kcp.io/cluster"])


if __name__ == "__main__":
    main()
