package vwproxytest_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"vwproxy.dev/go/vwproxytest"
)

// A workspace fault bites through the virtual workspace and is undone on request; a
// ServiceAccount asked for at Start has its own kubeconfig for the export's VW.
func TestWorkspaceFaultsAndServiceAccounts(t *testing.T) {
	env := vwproxytest.Start(t, vwproxytest.Options{Deterministic: true, ServiceAccounts: []string{"root:provider/controller=widgets"}})
	sa := env.ServiceAccounts["root:provider/controller"]
	if config, err := os.ReadFile(sa.EndpointKubeconfigs["root:provider/widgets"]); err != nil || !strings.Contains(string(config), "/clusters/*") {
		t.Fatalf("the ServiceAccount's VW kubeconfig: %v", err)
	}
	client, err := env.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	vw := env.Endpoints["root:provider/widgets"][0]
	var list struct {
		Items []struct {
			Metadata struct {
				Name        string
				Annotations map[string]string
			}
		}
	}
	resp, err := client.Get(vw + "/clusters/*/apis/example.dev/v1alpha1/widgets")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	green := ""
	for _, item := range list.Items {
		if item.Metadata.Name == "green" {
			green = vw + "/clusters/" + item.Metadata.Annotations["kcp.io/cluster"] + "/apis/example.dev/v1alpha1/namespaces/default/widgets/green"
		}
	}
	status := func() int {
		req, _ := http.NewRequest(http.MethodPatch, green, strings.NewReader(`{"metadata":{"labels":{"touched":"yes"}}}`))
		req.Header.Set("Content-Type", "application/merge-patch+json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if err := env.Fault("root:consumer-2", "down", nil); err != nil {
		t.Fatal(err)
	}
	if code := status(); code != http.StatusServiceUnavailable {
		t.Fatalf("a write into a down workspace through the VW: HTTP %d, want 503", code)
	}
	if err := env.ClearFaults("root:consumer-2"); err != nil {
		t.Fatal(err)
	}
	if code := status(); code != http.StatusOK {
		t.Fatalf("the same write once the fault is cleared: HTTP %d, want 200", code)
	}
	if err := env.Fault("root:consumer-2", "melt", nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("an unknown fault: %v, want HTTP 400", err)
	}
}
