package vwproxytest_test

import (
	"encoding/json"
	"testing"

	"vwproxy.dev/go/vwproxytest"
)

// A controller's test: the proxy is settled when Start returns, so no sleeps.
func TestWidgetsThroughTheVirtualWorkspace(t *testing.T) {
	env := vwproxytest.Start(t, vwproxytest.Options{Deterministic: true})
	client, err := env.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	vw := env.Endpoints["root:provider/widgets"][0] // deterministic: .../apiexport/1uhc1e4o7ozqb0rn/widgets
	resp, err := client.Get(vw + "/clusters/*/apis/example.dev/v1alpha1/widgets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Items []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Items) != 5 {
		t.Fatalf("widgets through %s: %d items, %v", vw, len(list.Items), err)
	}
}
