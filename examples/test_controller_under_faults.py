"""A workspace fault through the VW, and what a controller sees (quoted in the README)."""
WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"
WIDGET = {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 2}}


def test_a_down_workspace_catches_up_once_cleared(vwproxy_proxy, wait_visible):
    vw = vwproxy_proxy.endpoint_url("root:provider", "widgets")
    cluster = vwproxy_proxy.cluster_of("root:consumer-2")
    # also "hung", "slow" (ms=), "delay" (resource=, ms=), "expire-next-watch", "drop-watches"
    vwproxy_proxy.workspace_fault("root:consumer-2", "down")
    with vwproxy_proxy.client() as admin:
        created = admin.post(f"{vwproxy_proxy.workspace_url('root:consumer-2')}/{WIDGETS}", json=WIDGET)
        assert created.status_code == 201                                      # the front is not faulted
        assert admin.get(f"{vw}/clusters/{cluster}/{WIDGETS}/w2").status_code == 404  # the VW has not seen it
        listed = admin.get(f"{vw}/clusters/*/apis/example.dev/v1alpha1/widgets")
        assert cluster in listed.headers["warning"]                            # "workspace … is stale"
        assert admin.delete(f"{vw}/clusters/{cluster}/{WIDGETS}/green").status_code == 503  # writes there fail
    vwproxy_proxy.clear_workspace_faults("root:consumer-2")
    wait_visible(vw, WIDGETS, "w2", cluster)                                   # what was held back arrives
