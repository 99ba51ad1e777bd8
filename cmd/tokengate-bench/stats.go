package main

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// Histogram buckets: values below 2·subCount ns are exact; above, each power of
// two is split into subCount buckets, so a value read back as its bucket's
// midpoint is off by at most 1/(2·subCount) = 0.4%. Like HdrHistogram, in a
// fixed array: recording never allocates.
const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) * subCount // bucketOf(math.MaxInt64) + 1
)

// histogram counts latencies, and keeps the largest exactly. It is not safe
// for concurrent use: each load goroutine records into its own, and they are
// merged at the end.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	max    time.Duration
}

func newHistogram() *histogram { return new(histogram) }

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

func (h *histogram) count() uint64 { return h.n }

// summary is p50 and p99 to within 0.4%, and the exact max. A bucket's
// midpoint may lie above the max; a percentile never does.
func (h *histogram) summary() latencies {
	return latencies{P50: min(h.percentile(0.50), h.max), P99: min(h.percentile(0.99), h.max), Max: h.max}
}

// percentile returns the nearest-rank q-quantile (0 < q ≤ 1): the smallest
// recorded value with at least q·n values at or below it, to within 0.4%.
// An empty histogram answers 0.
func (h *histogram) percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(numBuckets - 1) // unreachable: seen ends at n
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // keeps the top subBits+1 bits
	return shift*subCount + int(v>>shift)
}

// bucketValue is the midpoint of bucket i.
func bucketValue(i int) time.Duration {
	if i < 2*subCount {
		return time.Duration(i)
	}
	shift := i/subCount - 1
	top := uint64(i - shift*subCount)
	return time.Duration(top<<shift + 1<<(shift-1))
}

// median of xs (the mean of the middle two when len(xs) is even); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// latencies summarizes a set of durations: exactly from all of them
// (summarizeDurations), or from a histogram (histogram.summary).
type latencies struct {
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

func summarizeDurations(ds []time.Duration) latencies {
	s := slices.Sorted(slices.Values(ds))
	l := latencies{P50: nearestRank(s, 0.50), P99: nearestRank(s, 0.99)}
	if len(s) > 0 {
		l.Max = s[len(s)-1]
	}
	return l
}

// nearestRank returns the nearest-rank q-quantile (0 < q ≤ 1) of sorted, as
// histogram.percentile does: the smallest value with at least q·n values at
// or below it. 0 for none.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
