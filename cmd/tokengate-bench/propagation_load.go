package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokengate/tokengate/storage/postgres/pgcluster"
)

// backgroundResult is what the background load did.
type backgroundResult struct {
	Rate     int     `json:"rate"`   // asked, revocations/s
	Done     float64 `json:"done"`   // made (201), per second
	Sent     int64   `json:"sent"`   // POSTs sent
	Failed   int64   `json:"failed"` // POSTs not answered 201
	Missed   int64   `json:"missed"` // ticks skipped: every sender was still waiting
	firstErr error
}

// backgroundLoad revokes distinct jtis through one replica at a fixed rate,
// open loop: a tick sends whether or not earlier POSTs have been answered,
// up to maxInFlight at once (a tick beyond that is counted as missed).
type backgroundLoad struct {
	cancel                   context.CancelFunc
	done                     chan struct{}
	start                    time.Time
	rate                     int
	sent, failed, ok, missed atomic.Int64
	errOnce                  sync.Once
	err                      error
}

const maxInFlight = 64

func startBackgroundLoad(ctx context.Context, admin *adminClient, rate int) *backgroundLoad {
	admin.http.Transport = &http.Transport{MaxIdleConnsPerHost: maxInFlight}
	ctx, cancel := context.WithCancel(ctx)
	l := &backgroundLoad{cancel: cancel, done: make(chan struct{}), start: time.Now(), rate: rate}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		slots := make(chan struct{}, maxInFlight)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		expires := time.Now().Add(tokenTTL)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				l.missed.Add(1)
				continue
			}
			l.sent.Add(1)
			wg.Go(func() {
				defer func() { <-slots }()
				err := admin.post(ctx, map[string]any{"kind": "token", "issuer": "bench",
					"jti": fmt.Sprintf("background-%d", i), "expires_at": expires})
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() != nil: // stopped mid-POST: neither made nor failed
					l.sent.Add(-1)
				default:
					l.failed.Add(1)
					l.errOnce.Do(func() { l.err = err })
				}
			})
		}
	}()
	return l
}

// stop ends the load, waits for the POSTs in flight, and reports.
func (l *backgroundLoad) stop() backgroundResult {
	l.cancel()
	<-l.done
	return backgroundResult{Rate: l.rate, Done: float64(l.ok.Load()) / time.Since(l.start).Seconds(),
		Sent: l.sent.Load(), Failed: l.failed.Load(), Missed: l.missed.Load(), firstErr: l.err}
}

// connCount is how many connections the replicas held on their database,
// from pg_stat_activity: the most seen, and the count at the end.
type connCount struct {
	Peak int `json:"peak"`
	End  int `json:"end"`
}

// connCounter samples the replicas' connections to the database at url
// every 500ms: every connection there but the sampler's own.
type connCounter struct {
	cancel     context.CancelFunc
	done       chan struct{}
	peak, last int
}

func startConnCounter(ctx context.Context, url string) *connCounter {
	ctx, cancel := context.WithCancel(ctx)
	c := &connCounter{cancel: cancel, done: make(chan struct{})}
	sample := func() {
		var n int
		if err := pgcluster.QueryRow(ctx, url,
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", nil, &n); err == nil {
			c.peak, c.last = max(c.peak, n), n
		}
	}
	go func() {
		defer close(c.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return c
}

// stop ends the sampling and returns the peak and the last count.
func (c *connCounter) stop() (peak, last int) {
	c.cancel()
	<-c.done
	return c.peak, c.last
}
