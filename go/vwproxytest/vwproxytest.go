// Package vwproxytest starts vwproxy for `go test`, the way envtest starts kube-apiserver: one
// call gives a settled proxy (every workspace, binding and endpoint slice ready) with its URLs
// and kubeconfigs, and stops it when the test ends.
//
// It runs `vwproxy up --json` and `vwproxy down`; the command is `vwproxy` from PATH unless the
// VWPROXY environment variable names another (split on spaces, e.g. "python3 -m vwproxy.cli").
package vwproxytest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Options choose what `vwproxy up` starts.
type Options struct {
	Config        string // a folder of kcp manifests; "" is the example topology
	DataDir       string // "" is a fresh temporary folder of the test
	Deterministic bool   // logical cluster names derived from workspace paths, a fixed RV base
	// ServiceAccounts to create, as `--service-account`: "WORKSPACE/NAME" or
	// "WORKSPACE/NAME=EXPORT,..." (granted apiexports/content of those exports there).
	ServiceAccounts []string
}

// ServiceAccount is what `vwproxy up --service-account` made: kubeconfigs with its own token.
type ServiceAccount struct {
	Kubeconfig          string            `json:"kubeconfig"`          // its workspace
	EndpointKubeconfigs map[string]string `json:"endpointKubeconfigs"` // "<workspace path>/<export>" -> VW URL + /clusters/*
}

// Env is the running proxy, as `vwproxy up --json` describes it.
type Env struct {
	URL                 string              `json:"url"`
	Endpoints           map[string][]string `json:"endpoints"`           // "<workspace path>/<slice>" -> VW URLs
	Kubeconfig          string              `json:"kubeconfig"`          // the admin's, for the front
	EndpointKubeconfigs map[string]string   `json:"endpointKubeconfigs"` // the admin's, per slice: VW URL + /clusters/*
	CA                  string              `json:"ca"`
	PID                 int                 `json:"pid"`
	DataDir             string              `json:"dataDir"`
	Log                 string              `json:"log"`
	// "<workspace path>/<name>" of each Options.ServiceAccounts entry.
	ServiceAccounts map[string]ServiceAccount `json:"serviceAccounts"`
}

func command(args ...string) *exec.Cmd {
	argv := strings.Fields(os.Getenv("VWPROXY"))
	if len(argv) == 0 {
		argv = []string{"vwproxy"}
	}
	argv = append(argv, args...)
	return exec.Command(argv[0], argv[1:]...)
}

// Start runs `vwproxy up` and registers `vwproxy down` with t.Cleanup.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "vwproxy")
	}
	args := []string{"up", "--json", "--port", "0", "--data-dir", dataDir}
	if opts.Config != "" {
		args = append(args, "--config", opts.Config)
	}
	if opts.Deterministic {
		args = append(args, "--deterministic")
	}
	for _, account := range opts.ServiceAccounts {
		args = append(args, "--service-account", account)
	}
	var stdout, stderr bytes.Buffer
	up := command(args...)
	up.Stdout, up.Stderr = &stdout, &stderr
	if err := up.Run(); err != nil {
		t.Fatalf("vwproxy up: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	env := &Env{}
	if err := json.Unmarshal(stdout.Bytes(), env); err != nil {
		t.Fatalf("vwproxy up printed no JSON document: %v: %s", err, stdout.String())
	}
	t.Cleanup(func() {
		down := command("down", "--data-dir", env.DataDir)
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("vwproxy down: %v: %s", err, strings.TrimSpace(string(out)))
		}
	})
	return env
}

// AdminToken is the admin's bearer token (system:masters), from the data dir.
func (e *Env) AdminToken() (string, error) {
	file, err := os.Open(filepath.Join(e.DataDir, "tokens.csv"))
	if err != nil {
		return "", err
	}
	defer file.Close()
	reader := csv.NewReader(file)
	reader.FieldsPerRecord = -1
	records, err := reader.ReadAll()
	if err != nil {
		return "", err
	}
	for _, record := range records {
		if len(record) >= 2 && strings.TrimSpace(record[1]) == "admin" {
			return strings.TrimSpace(record[0]), nil
		}
	}
	return "", fmt.Errorf("%s has no admin", file.Name())
}

// HTTPClient trusts the proxy's CA and sends the admin's token.
func (e *Env) HTTPClient() (*http.Client, error) {
	pem, err := os.ReadFile(e.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", e.CA)
	}
	token, err := e.AdminToken()
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	return &http.Client{Transport: bearer{token, transport}}, nil
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// Fault switches a fault on for one workspace (a path or logical cluster name) as the virtual
// workspaces see it, through the admin API: kind "down", "hung", "slow" (args "ms"),
// "expire-next-watch", "drop-watches", or "delay" (args "resource", e.g.
// "logicalclusters.core.kcp.io", and "ms").
func (e *Env) Fault(workspace, kind string, args map[string]any) error {
	body := map[string]any{"fault": kind}
	for k, v := range args {
		body[k] = v
	}
	encoded, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return e.faults(http.MethodPost, workspace, encoded)
}

// ClearFaults clears every fault of a workspace; what they held back reaches the views now.
func (e *Env) ClearFaults(workspace string) error {
	return e.faults(http.MethodDelete, workspace, nil)
}

func (e *Env) faults(method, workspace string, body []byte) error {
	client, err := e.HTTPClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, e.URL+"/vwproxy/faults/workspaces/"+workspace, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s faults of %s: HTTP %d: %s", method, workspace, resp.StatusCode, strings.TrimSpace(string(answer)))
	}
	return nil
}
