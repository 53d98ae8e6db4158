// Command fanoutwatch is the watcher side of benchmarks/fanout_bench.py written in Go: it opens
// many watches of one URL, checks every event it receives, and reports as the Python watcher
// process does (one JSON line when its watches are open, one with its findings at the end).
//
// A watcher in Go costs a fraction of the CPU of one on aiohttp, so on a small machine more of
// it is left to the proxy that is being measured; and the controllers that watch a virtual
// workspace are mostly Go programs. Only the standard library is used, so it builds offline.
//
//	fanoutwatch -url URL -rv RV -watchers N -expect N -first N -sample-every N [credentials]
//	fanoutwatch -write-base URL -clusters root:a,root:b -objects N -rate R -count N [-conns 16] [-get-url URL -gets R] [credentials]
//
// Credentials, for an https server that authenticates (a real kcp, or `vwproxy serve`): -ca FILE
// (the server's CA; else the system's), -cert FILE -key FILE (a client certificate), -insecure,
// and the bearer token in the environment variable FANOUT_TOKEN (not on the command line, where
// other users of the machine could read it). Every connection speaks HTTP/1.1, one per watch, as
// against the plain-HTTP proxy, so that the two compare; with -http2 HTTP/2 is offered too, as
// client-go offers it, and a server that takes it carries the watches on a few connections.
//
// Then it reads one line {"total": N} from standard input: the number of changes made. It waits
// until every watcher has N events (or 30 s), 0.3 s more for duplicates, and reports.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	indexKey        = "fanout-i"
	sentKey         = "fanout-t"
	openTimeout     = 60 * time.Second
	deliveryTimeout = 30 * time.Second
	bucketNS        = 100_000 // latency histogram resolution: 0.1 ms
	maxBucket       = 600_000 // 60 s; later deliveries are counted in the last bucket
)

var (
	modified   = []byte(`{"type":"MODIFIED","object":`)
	bookmark   = []byte(`{"type":"BOOKMARK",`)
	rvField    = []byte(`"resourceVersion":"`)
	indexField = []byte(`"` + indexKey + `":"`)
	sentField  = []byte(`"` + sentKey + `":"`)
)

// hist counts (event, checked watcher) pairs by delivery latency, shared by every watcher.
var hist [maxBucket + 1]atomic.Int64

type watcher struct {
	full       bool
	seen       []byte // per write index: how often it arrived (checked watchers only)
	beyond     int
	lastRV     uint64
	events     atomic.Int64
	outOfOrder int
	other      []string
	rewatches  int
	failed     string
	crc        uint32
	opened     chan struct{}
	proto      string // the protocol of the watch's first response (HTTP/1.1, HTTP/2.0)
	openOnce   sync.Once
	ended      atomic.Bool // run returned: failed, or stopped
}

// field returns the digits after `name` in `line`, or nil.
func field(line, name []byte) []byte {
	at := bytes.Index(line, name)
	if at < 0 {
		return nil
	}
	rest := line[at+len(name):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil
	}
	return rest[:end]
}

func number(digits []byte) (uint64, bool) {
	if len(digits) == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	return n, err == nil
}

// take checks one event line (without its newline), read at `now`.
func (w *watcher) take(line []byte, now int64) {
	if bytes.HasPrefix(line, bookmark) {
		return
	}
	if !bytes.HasPrefix(line, modified) {
		w.note(line)
		return
	}
	rv, okRV := number(field(line, rvField))
	index, okIndex := number(field(line, indexField))
	sent, okSent := number(field(line, sentField))
	if !okRV || !okIndex || !okSent || bytes.Count(line, rvField) != 1 {
		w.note(line)
		return
	}
	w.crc = crc32.Update(w.crc, crc32.IEEETable, line)
	w.crc = crc32.Update(w.crc, crc32.IEEETable, []byte{'\n'})
	if w.full {
		if rv <= w.lastRV {
			w.outOfOrder++
		}
		if index < uint64(len(w.seen)) {
			if w.seen[index] < 255 {
				w.seen[index]++
			}
		} else {
			w.beyond++
		}
		bucket := (now - int64(sent)) / bucketNS
		if bucket < 0 {
			bucket = 0
		} else if bucket > maxBucket {
			bucket = maxBucket
		}
		hist[bucket].Add(1)
	}
	if rv > w.lastRV {
		w.lastRV = rv
	}
	w.events.Add(1)
}

// takeWhole takes the complete lines at the start of `data` in one piece when they are all widget
// changes, as an unchecked watcher does: counted and hashed, the last RV kept. It returns how many
// bytes it took (0 when a line is something else: then every line is taken on its own).
func (w *watcher) takeWhole(data []byte) int {
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return 0
	}
	lines := data[:end+1]
	n := 0
	for at := 0; at < len(lines); n++ {
		if !bytes.HasPrefix(lines[at:], modified) {
			return 0
		}
		at += bytes.IndexByte(lines[at:], '\n') + 1
	}
	last := lines[bytes.LastIndexByte(lines[:end], '\n')+1 : end]
	rv, ok := number(field(last, rvField))
	if !ok {
		return 0
	}
	w.crc = crc32.Update(w.crc, crc32.IEEETable, lines)
	if rv > w.lastRV {
		w.lastRV = rv
	}
	w.events.Add(int64(n))
	return end + 1
}

func (w *watcher) note(line []byte) {
	shown := line
	if len(shown) > 200 {
		shown = shown[:200]
	}
	var event struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(line, &event)
	if len(w.other) < 2 {
		w.other = append(w.other, fmt.Sprintf("%s: %q", event.Type, shown))
	}
	if event.Type == "ERROR" && w.failed == "" {
		w.failed = fmt.Sprintf("ERROR event: %q", shown)
	}
}

func (w *watcher) open() { w.openOnce.Do(func() { close(w.opened) }) }

// run watches `base` from `rv` until `ctx` ends, watching again from the last RV whenever the
// server ends the stream (as an informer does).
func (w *watcher) run(ctx context.Context, client *http.Client, base string, rv string) {
	defer w.ended.Store(true)
	defer w.open()
	buf := make([]byte, 64<<10)
	for ctx.Err() == nil {
		from := rv
		if w.lastRV > 0 {
			from = strconv.FormatUint(w.lastRV, 10)
		}
		q := url.Values{"watch": {"true"}, "resourceVersion": {from}, "allowWatchBookmarks": {"true"}, "timeoutSeconds": {"3600"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"?"+q.Encode(), nil)
		if err != nil {
			w.failed = "watch: " + err.Error()
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				w.failed = "watch: " + err.Error()
			}
			return
		}
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			resp.Body.Close()
			w.failed = fmt.Sprintf("watch: HTTP %d: %q", resp.StatusCode, body)
			return
		}
		if w.proto == "" {
			w.proto = resp.Proto
		}
		w.open()
		held := 0 // bytes of an incomplete line at the start of buf
		for {
			if held == len(buf) {
				grown := make([]byte, 2*len(buf))
				copy(grown, buf)
				buf = grown
			}
			n, err := resp.Body.Read(buf[held:])
			now := time.Now().UnixNano()
			if n > 0 {
				data := buf[:held+n]
				start := 0
				if !w.full {
					start = w.takeWhole(data)
				}
				for {
					end := bytes.IndexByte(data[start:], '\n')
					if end < 0 {
						break
					}
					if line := data[start : start+end]; len(bytes.TrimSpace(line)) > 0 {
						w.take(line, now)
					}
					start += end + 1
				}
				held = copy(buf, data[start:])
			}
			if w.failed != "" {
				resp.Body.Close()
				return
			}
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if ctx.Err() == nil {
			w.rewatches++
		}
	}
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) != nil {
		return 0
	}
	return float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e9
}

func main() {
	base := flag.String("url", "", "the watched URL (without a query)")
	rv := flag.String("rv", "", "the resourceVersion to watch from")
	watchers := flag.Int("watchers", 1, "watches to open")
	expect := flag.Int("expect", 0, "write indices a checked watcher keeps count of")
	first := flag.Int("first", 0, "the number of this process's first watcher (for sampling)")
	sampleEvery := flag.Int("sample-every", 1, "every N-th watcher (by number) is checked event by event and timed")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	writeBase := flag.String("write-base", "", "be the writer instead: make the changes through this front URL")
	clusters := flag.String("clusters", "", "writer: the consumer workspaces' cluster names or paths (root:a), comma-separated")
	objects := flag.Int("objects", 1, "writer: widgets per workspace")
	rate := flag.Float64("rate", 1, "writer: changes per second")
	count := flag.Int("count", 0, "writer: changes in all")
	conns := flag.Int("conns", 16, "writer: keep-alive connections for the changes")
	getURL := flag.String("get-url", "", "writer: a widget to GET through the VW meanwhile")
	gets := flag.Float64("gets", 0, "writer: GETs per second")
	writeDeadline := flag.Float64("deadline", 0, "writer: start no change after this many seconds (0: none)")
	caFile := flag.String("ca", "", "the server's CA bundle (PEM); default: the system's")
	certFile := flag.String("cert", "", "a client certificate (PEM), with -key")
	keyFile := flag.String("key", "", "the client certificate's key (PEM)")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	http2 := flag.Bool("http2", false, "offer HTTP/2 over TLS, as client-go does: a server that takes it carries many watches on one connection")
	flag.Parse()
	creds, err := loadCredentials(*caFile, *certFile, *keyFile, *insecure, *http2)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanoutwatch:", err)
		os.Exit(2)
	}
	if *writeBase != "" {
		names := splitNames(*clusters)
		if len(names) == 0 || *objects <= 0 || *rate <= 0 || *count < 0 || *conns <= 0 || *gets < 0 || *writeDeadline < 0 {
			fmt.Fprintln(os.Stderr, "fanoutwatch: -write-base needs -clusters, a positive -objects, -rate and -conns")
			os.Exit(2)
		}
		os.Exit(write(writerConfig{base: *writeBase, clusters: names, objects: *objects, rate: *rate, count: *count, conns: *conns,
			getURL: *getURL, gets: *gets, deadline: *writeDeadline, creds: creds}))
	}
	if *cpuProfile != "" {
		out, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(out)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "fanoutwatch: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if *base == "" || *watchers <= 0 || *sampleEvery <= 0 {
		fmt.Fprintln(os.Stderr, "fanoutwatch: -url, a positive -watchers and -sample-every are needed")
		os.Exit(2)
	}
	cpu0 := cpuSeconds()
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: *watchers,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		TLSClientConfig:     creds.tls,
		ForceAttemptHTTP2:   creds.http2,
	}
	client := &http.Client{Transport: creds.wrap(transport)}
	ctx, stop := context.WithCancel(context.Background())
	var running sync.WaitGroup
	ws := make([]*watcher, *watchers)
	for j := range ws {
		full := (*first+j)%*sampleEvery == 0
		w := &watcher{full: full, opened: make(chan struct{})}
		if full {
			w.seen = make([]byte, *expect)
		}
		ws[j] = w
		running.Add(1)
		go func() { defer running.Done(); w.run(ctx, client, *base, *rv) }()
	}
	deadline := time.After(openTimeout)
	var failed []string
	for _, w := range ws {
		select {
		case <-w.opened:
			if w.failed != "" { // set before opened was closed
				failed = append(failed, w.failed)
			}
		case <-deadline:
			failed = append(failed, "watch: not open after 60 s")
		}
	}
	protos := map[string]int{}
	for _, w := range ws {
		if w.proto != "" {
			protos[w.proto]++
		}
	}
	say(map[string]any{"ready": len(failed) == 0, "failed": head(failed, 3), "protos": protos})

	line, err := bufio.NewReader(os.Stdin).ReadBytes('\n')
	total := int64(0)
	if err == nil || errors.Is(err, io.EOF) {
		var told struct {
			Total int64 `json:"total"`
		}
		if json.Unmarshal(line, &told) == nil {
			total = told.Total
		}
	}
	until := time.Now().Add(deliveryTimeout)
	for time.Now().Before(until) {
		done := true
		for _, w := range ws {
			if w.events.Load() < total && !w.ended.Load() {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // duplicates would arrive now
	stop()
	running.Wait()

	report := map[string]any{"watchers": *watchers, "cpu": cpuSeconds() - cpu0}
	var sampled, complete, missing, duplicates, unexpected, outOfOrder, rewatches, events int64
	other, failedAll := []string{}, []string{}
	streams := [][]any{}
	for _, w := range ws {
		rewatches += int64(w.rewatches)
		n := w.events.Load()
		events += n
		other = append(other, w.other...)
		if w.failed != "" {
			failedAll = append(failedAll, w.failed)
		}
		streams = append(streams, []any{w.full, n, w.crc})
		if !w.full {
			continue
		}
		sampled++
		var m, once, extra int64
		for i, c := range w.seen {
			switch {
			case int64(i) >= total:
				if c > 0 {
					extra++
				}
			case c == 0:
				m++
			case c == 1:
				once++
			}
		}
		dups := total - m - once
		extra += int64(w.beyond)
		missing += m
		duplicates += dups
		unexpected += extra
		outOfOrder += int64(w.outOfOrder)
		if m == 0 && dups == 0 && extra == 0 && w.outOfOrder == 0 && len(w.other) == 0 && w.failed == "" {
			complete++
		}
	}
	counts := map[string]int64{}
	for b := range hist {
		if c := hist[b].Load(); c > 0 {
			counts[strconv.Itoa(b)] = c
		}
	}
	for k, v := range map[string]int64{"sampled": sampled, "complete": complete, "missing": missing, "duplicates": duplicates,
		"unexpected": unexpected, "out_of_order": outOfOrder, "rewatches": rewatches, "events": events} {
		report[k] = v
	}
	report["other"] = other
	report["failed"] = failedAll
	report["hist"] = counts
	report["streams"] = streams
	say(report)
}

// credentials are what every request presents: TLS settings (nil: the defaults) and a bearer token.
type credentials struct {
	tls   *tls.Config
	token string
	http2 bool // offer HTTP/2 (ALPN h2) on TLS connections
}

func loadCredentials(caFile, certFile, keyFile string, insecure, http2 bool) (credentials, error) {
	c := credentials{token: os.Getenv("FANOUT_TOKEN"), http2: http2}
	if caFile == "" && certFile == "" && !insecure {
		return c, nil
	}
	c.tls = &tls.Config{InsecureSkipVerify: insecure} // only when asked, as kubectl's --insecure-skip-tls-verify
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return c, fmt.Errorf("-ca: %w", err)
		}
		c.tls.RootCAs = x509.NewCertPool()
		if !c.tls.RootCAs.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("-ca %s: no PEM certificate in it", caFile)
		}
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return c, fmt.Errorf("-cert/-key: %w", err)
		}
		c.tls.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// wrap adds the bearer token, if any, to every request `next` makes.
func (c credentials) wrap(next http.RoundTripper) http.RoundTripper {
	if c.token == "" {
		return next
	}
	return bearer{next: next, value: "Bearer " + c.token}
}

type bearer struct {
	next  http.RoundTripper
	value string
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", b.value)
	return b.next.RoundTrip(req)
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	if s == nil {
		return []string{}
	}
	return s
}

func say(v any) {
	out, _ := json.Marshal(v)
	os.Stdout.Write(append(out, '\n'))
}
