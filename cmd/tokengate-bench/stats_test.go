package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// within reports whether got is within rel (relative) of want.
func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)
}

func TestPercentileUniform(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 10_000; i++ { // 1µs … 10ms, evenly
		h.record(time.Duration(i) * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{
		0.01: 100 * time.Microsecond,
		0.50: 5 * time.Millisecond,
		0.90: 9 * time.Millisecond,
		0.99: 9900 * time.Microsecond,
		1.00: 10 * time.Millisecond,
	} {
		if got := h.percentile(q); !within(got, want, 0.01) {
			t.Errorf("percentile(%v) = %v, want %v ±1%%", q, got, want)
		}
	}
	if got := h.count(); got != 10_000 {
		t.Errorf("count() = %d, want 10000", got)
	}
}

// TestPercentileMatchesSorted compares with exact nearest-rank percentiles of
// a sorted slice, over a long-tailed (log-normal) distribution like latencies.
func TestPercentileMatchesSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := newHistogram()
	var all []time.Duration
	for range 100_000 {
		d := time.Duration(math.Exp(r.NormFloat64()*0.8) * float64(500*time.Microsecond))
		h.record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(math.Ceil(q*float64(len(all))))-1]
		if got := h.percentile(q); !within(got, want, 0.01) {
			t.Errorf("percentile(%v) = %v, want %v ±1%%", q, got, want)
		}
	}
}

func TestPercentileSmallValuesExact(t *testing.T) {
	h := newHistogram()
	for _, d := range []time.Duration{3, 1, 255, 2, 200} {
		h.record(d)
	}
	for q, want := range map[float64]time.Duration{0.2: 1, 0.4: 2, 0.6: 3, 0.8: 200, 1: 255} {
		if got := h.percentile(q); got != want {
			t.Errorf("percentile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestPercentileEmpty(t *testing.T) {
	if got := newHistogram().percentile(0.99); got != 0 {
		t.Errorf("percentile(0.99) of nothing = %v, want 0", got)
	}
}

// TestBucketError checks that any value reads back within 0.4%, up to the
// largest duration.
func TestBucketError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	values := []time.Duration{0, 127, 128, 255, 256, 257, 511, 512, time.Second, math.MaxInt64}
	for range 10_000 {
		values = append(values, time.Duration(r.Int64N(int64(time.Minute))))
	}
	for _, d := range values {
		i := bucketOf(d)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0, %d)", d, i, numBuckets)
		}
		if got := bucketValue(i); !within(got, d, 1.0/256) {
			t.Errorf("bucketValue(bucketOf(%d)) = %d, want within 0.4%%", d, got)
		}
	}
	if got := bucketOf(-5); got != 0 {
		t.Errorf("bucketOf(-5) = %d, want 0", got)
	}
}

func TestMerge(t *testing.T) {
	a, b, all := newHistogram(), newHistogram(), newHistogram()
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(b)
	if a.count() != all.count() {
		t.Fatalf("merged count = %d, want %d", a.count(), all.count())
	}
	for _, q := range []float64{0.5, 0.99} {
		if got, want := a.percentile(q), all.percentile(q); got != want {
			t.Errorf("merged percentile(%v) = %v, want %v", q, got, want)
		}
	}
}

// TestSummary: p50 and p99 from the buckets, the max exact, merged too.
func TestSummary(t *testing.T) {
	a, b := newHistogram(), newHistogram()
	for i := 1; i <= 100; i++ {
		a.record(time.Duration(i) * time.Millisecond)
	}
	const slowest = 123456789 * time.Nanosecond // not a bucket's midpoint
	b.record(slowest)
	a.merge(b)
	// 101 values: the 51st and the 100th.
	got := a.summary()
	if !within(got.P50, 51*time.Millisecond, 0.004) || !within(got.P99, 100*time.Millisecond, 0.004) || got.Max != slowest {
		t.Errorf("summary() = %+v, want p50 51ms and p99 100ms (±0.4%%), max %v exactly", got, slowest)
	}
	if got := newHistogram().summary(); got != (latencies{}) {
		t.Errorf("summary() of nothing = %+v, want zeros", got)
	}
	// The max's bucket reads back above it: p99 stops at the max.
	one := newHistogram()
	one.record(slowest)
	if got := one.summary(); got.P50 != slowest || got.P99 != slowest {
		t.Errorf("summary() of %v alone = %+v, want it as every percentile", slowest, got)
	}
}

func TestMedian(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []float64
		want float64
	}{
		"none": {nil, 0},
		"one":  {[]float64{7}, 7},
		"odd":  {[]float64{9, 1, 5}, 5},
		"even": {[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(tc.in)
		if got := median(tc.in); got != tc.want {
			t.Errorf("%s: median(%v) = %v, want %v", name, in, got, tc.want)
		}
		if !slices.Equal(tc.in, in) {
			t.Errorf("%s: median reordered its input to %v", name, tc.in)
		}
	}
}
