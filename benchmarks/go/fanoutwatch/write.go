package main

// The writer side of benchmarks/fanout_bench.py in Go (-write-base): the changes and the
// concurrent GETs, made as the Python driver makes them, at a fraction of its CPU.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const widgets = "/apis/example.dev/v1alpha1"

type writerConfig struct {
	base     string   // the front, where the writes go
	clusters []string // consumer workspaces: cluster names or paths (root:a)
	objects  int      // widgets per workspace, w-00000 …
	rate     float64  // changes per second
	count    int      // changes in all
	conns    int      // keep-alive connections the changes are made over
	getURL   string   // a widget through the VW
	gets     float64  // GETs per second during the changes (0: none)
	deadline float64  // seconds after the first change after which no more are started (0: none)
	creds    credentials
}

// write makes the changes and the GETs and reports them as one JSON line: how many, over how many
// seconds, every write's and GET's round trip in ms, its own CPU, and the first failure.
func write(c writerConfig) int {
	cpu0 := cpuSeconds()
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: c.conns + 1,
		MaxConnsPerHost:     c.conns + 1,
		DisableCompression:  true,
		TLSClientConfig:     c.creds.tls,
		ForceAttemptHTTP2:   c.creds.http2,
	}
	client := &http.Client{Transport: c.creds.wrap(transport), Timeout: 60 * time.Second}
	var (
		next    atomic.Int64
		failure atomic.Value
		mu      sync.Mutex
		writeMS = make([]float64, 0, c.count)
		getMS   []float64
		writing atomic.Bool
	)
	fail := func(err error) { failure.CompareAndSwap(nil, err.Error()) }
	do := func(method, url string, body []byte, want int) (float64, bool) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			fail(err)
			return 0, false
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/merge-patch+json")
		}
		sent := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fail(fmt.Errorf("%s %s: %w", method, url, err))
			return 0, false
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			fail(fmt.Errorf("%s %s: HTTP %d: %.200s", method, url, resp.StatusCode, got))
			return 0, false
		}
		return float64(time.Since(sent).Nanoseconds()) / 1e6, true
	}
	t0 := time.Now()
	writing.Store(true)
	var getters sync.WaitGroup
	if c.gets > 0 && c.getURL != "" {
		getters.Add(1)
		go func() {
			defer getters.Done()
			for k := 1; writing.Load(); k++ {
				time.Sleep(time.Until(t0.Add(time.Duration(float64(k) / c.gets * 1e9))))
				if !writing.Load() {
					break
				}
				if ms, ok := do(http.MethodGet, c.getURL, nil, http.StatusOK); ok {
					mu.Lock()
					getMS = append(getMS, ms)
					mu.Unlock()
				}
			}
		}()
	}
	var writers sync.WaitGroup
	for range c.conns {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for failure.Load() == nil {
				if c.deadline > 0 && time.Since(t0).Seconds() >= c.deadline {
					return // a server slower than asked: what it took by now is the measurement
				}
				i := int(next.Add(1) - 1)
				if i >= c.count {
					return
				}
				time.Sleep(time.Until(t0.Add(time.Duration(float64(i) / c.rate * 1e9))))
				cluster := c.clusters[i%len(c.clusters)]
				name := fmt.Sprintf("w-%05d", (i/len(c.clusters))%c.objects)
				patch := []byte(`{"metadata":{"annotations":{"` + indexKey + `":"` + strconv.Itoa(i) + `","` + sentKey + `":"` +
					strconv.FormatInt(time.Now().UnixNano(), 10) + `"}}}`)
				url := c.base + "/clusters/" + cluster + widgets + "/namespaces/default/widgets/" + name
				if ms, ok := do(http.MethodPatch, url, patch, http.StatusOK); ok {
					mu.Lock()
					writeMS = append(writeMS, ms)
					mu.Unlock()
				}
			}
		}()
	}
	writers.Wait()
	seconds := time.Since(t0).Seconds()
	writing.Store(false)
	getters.Wait()
	failed, _ := failure.Load().(string)
	started := min(int(next.Load()), c.count)
	say(map[string]any{"writes": len(writeMS), "started": started, "seconds": seconds, "write_ms": writeMS, "get_ms": nonNil(getMS),
		"cpu": cpuSeconds() - cpu0, "failed": failed})
	if failed != "" {
		return 1
	}
	return 0
}

func nonNil(s []float64) []float64 {
	if s == nil {
		return []float64{}
	}
	return s
}

func splitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
