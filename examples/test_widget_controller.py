"""A controller's test against vwproxy's pytest fixtures (README, "Testing your controller")."""
import kubernetes

WIDGETS = "apis/example.dev/v1alpha1/namespaces/default/widgets"
CONTENT = [{"apiGroups": ["apis.kcp.io"], "resources": ["apiexports/content"], "resourceNames": ["widgets"], "verbs": ["*"]}]


def widget_names(kubeconfig):  # stands for your controller: it lists widgets through the VW
    api = kubernetes.config.new_client_from_config(str(kubeconfig))
    found = kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object("example.dev", "v1alpha1", "widgets")
    return {(w["metadata"]["annotations"]["kcp.io/cluster"], w["metadata"]["name"]) for w in found["items"]}


def test_a_new_consumer_reaches_the_controller(vwproxy_proxy, make_workspace, make_binding, service_account_kubeconfig, wait_visible):
    cluster = make_workspace("root:shop")                      # returns once it has its logical cluster
    make_binding("root:shop", "root:provider", "widgets")      # returns once the binding is Ready
    with vwproxy_proxy.client() as admin:
        admin.post(f"{vwproxy_proxy.workspace_url('root:shop')}/{WIDGETS}",
                   json={"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1}})
    vw = vwproxy_proxy.endpoint_url("root:provider", "widgets")
    wait_visible(vw, WIDGETS, "w1", cluster)                   # no sleeps
    kubeconfig = service_account_kubeconfig("root:provider", "controller", CONTENT, server=f"{vw}/clusters/*")
    assert (cluster, "w1") in widget_names(kubeconfig)
