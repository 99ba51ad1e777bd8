package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// processHeapBytes is the process's own share of the heap bound: the
	// README's Sizing puts the process (runtime, gRPC, keys, metrics) at
	// ~25 MiB resident, of which ~3 MiB is heap.
	processHeapBytes = 25 << 20
	// revocationBytes is what one live revocation costs the index (Sizing:
	// 100.5 B measured).
	revocationBytes = 100
)

// heapBound is the heap a replica may hold in use: twice its live heap as
// README's Sizing reckons it, 25 MiB + cache.max_bytes + 100 B per live
// revocation, since GOGC lets garbage pile up between collections.
func heapBound(cacheBytes, live int64) int64 {
	return 2 * (processHeapBytes + cacheBytes + revocationBytes*live)
}

// memoryMax is one replica's largest memory figures over a run.
type memoryMax struct {
	Name    string `json:"name"`
	Samples int    `json:"samples"`
	// RSS is the largest VmRSS of /proc/<pid>/status.
	RSS int64 `json:"max_rss_bytes"`
	// HeapInuse is the largest go_memstats_heap_inuse_bytes of /metrics.
	HeapInuse int64 `json:"max_heap_inuse_bytes"`
	// Live is the largest sum of tokengate_revocations.
	Live int64 `json:"max_live_revocations"`
	// Bound is the heap bound at the sample that came closest to it.
	Bound int64 `json:"heap_bound_bytes"`
	// Over counts the samples whose heap in use exceeded their bound.
	Over int `json:"samples_over_bound"`
	// Errors counts samples that could not be read.
	Errors int `json:"sample_errors"`
	// headroom is the smallest bound − heap in use seen.
	headroom int64
}

// memorySampler reads each replica's RSS and /metrics.
type memorySampler struct {
	targets    []soakTarget
	cacheBytes int64
	http       *http.Client

	mu  sync.Mutex
	max []memoryMax
}

func newMemorySampler(targets []soakTarget, cacheBytes int64) *memorySampler {
	s := &memorySampler{targets: targets, cacheBytes: cacheBytes, http: &http.Client{Timeout: 5 * time.Second}}
	for _, t := range targets {
		s.max = append(s.max, memoryMax{Name: t.replica.name, headroom: 1 << 62})
	}
	return s
}

// run samples every interval until ctx ends.
func (s *memorySampler) run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sample reads every replica once.
func (s *memorySampler) sample(ctx context.Context) {
	for i, t := range s.targets {
		if t.pid == 0 {
			continue
		}
		rss, rssErr := readRSS(t.pid)
		m, mErr := s.metrics(ctx, t.httpAddr)
		s.mu.Lock()
		mm := &s.max[i]
		if rssErr != nil || mErr != nil {
			if ctx.Err() == nil {
				mm.Errors++
			}
			s.mu.Unlock()
			continue
		}
		heap, live := int64(m["go_memstats_heap_inuse_bytes"]), int64(m["tokengate_revocations"])
		bound := heapBound(s.cacheBytes, live)
		mm.Samples++
		mm.RSS = max(mm.RSS, rss)
		mm.HeapInuse = max(mm.HeapInuse, heap)
		mm.Live = max(mm.Live, live)
		if heap > bound {
			mm.Over++
		}
		if bound-heap < mm.headroom {
			mm.headroom, mm.Bound = bound-heap, bound
		}
		s.mu.Unlock()
	}
}

func (s *memorySampler) maxima() []memoryMax {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]memoryMax(nil), s.max...)
}

// metrics reads /metrics and sums each metric's samples by name, all
// labels together.
func (s *memorySampler) metrics(ctx context.Context, httpAddr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics sums the samples of each metric in Prometheus' text format
// by name.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest = line[:i], strings.TrimSpace(line[j+1:])
		}
		value, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // a timestamp may follow
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// readRSS is the process's resident set size, from /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS: unexpected %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}
