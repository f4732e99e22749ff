//go:build e2e

package e2e

import (
	"sync"
	"testing"
	"time"
)

// poller is the loop every observer of the e2e tests shares (windowWatch, clusterWatch, historyTrack,
// goTrack): each poll function runs at once and then every interval on its own goroutine, until Stop or
// the end of the test. Embed it and start the polls with every.
type poller struct {
	stop chan struct{}
	done sync.WaitGroup
}

// every runs poll now and then every interval until Stop; the first call makes the test's cleanup stop
// the poller.
func (p *poller) every(t *testing.T, interval time.Duration, poll func()) {
	if p.stop == nil {
		p.stop = make(chan struct{})
		t.Cleanup(p.Stop)
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			poll()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
}

// Stop ends the polling and waits for a poll in progress; it is safe to call more than once.
func (p *poller) Stop() {
	if p.stop == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.done.Wait()
}
