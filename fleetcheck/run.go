package fleetcheck

import (
	"context"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/ctxend"
)

// eventDelay is how long after an instant of the schedule a round starts,
// so that the round runs on the far side of it.
const eventDelay = 250 * time.Millisecond

// minRoundGap keeps back-to-back instants from starting rounds closer than
// this.
const minRoundGap = 500 * time.Millisecond

// Run checks in rounds until ctx ends: every interval, and also at the
// instants where the answer changes: just after the next key is published
// and once its readiness grace has passed, just before and just after each
// activation (and once the activation grace has passed), and once each key
// is past not_after (plus grace). onReport, if not nil, gets every report.
// It returns nil when ctx ends.
func (c *Checker) Run(ctx context.Context, interval time.Duration, onReport func(*Report)) error {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	for {
		rep, err := c.Check(ctx)
		if err != nil {
			if ctxend.Err(ctx, time.Now()) != nil {
				return nil
			}
			return err
		}
		if onReport != nil {
			onReport(rep)
		}
		wait := time.Until(c.nextRound(rep, interval, time.Now()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// nextRound picks when the round after rep runs: the first instant of the
// schedule after now (see Run), or now + interval if that is sooner.
func (c *Checker) nextRound(rep *Report, interval time.Duration, now time.Time) time.Time {
	next := now.Add(interval)
	consider := func(t time.Time) {
		t = t.Add(eventDelay)
		if t.After(now.Add(minRoundGap)) && t.Before(next) {
			next = t
		}
	}
	if w := rep.Window; w != nil {
		publishAhead := time.Duration(w.PublishAhead) * time.Second
		period := time.Duration(w.RotationPeriod) * time.Second
		lag := c.maxSwitchLag(period, publishAhead)
		nextGrace := nextGrace(c.cfg, publishAhead, c.maxReadyLag(period, publishAhead))
		grace := c.cfg.Grace
		var last time.Time
		for _, k := range w.Keys {
			published := k.PublishAt
			if published.IsZero() {
				published = k.NotBefore.Add(-publishAhead)
			}
			consider(published)
			consider(published.Add(nextGrace))
			consider(k.NotBefore.Add(-grace - 2*eventDelay))
			consider(k.NotBefore)
			consider(k.NotBefore.Add(grace))
			consider(k.NotBefore.Add(lag))
			consider(k.NotAfter)
			consider(k.NotAfter.Add(lag))
			if k.NotBefore.After(last) {
				last = k.NotBefore
			}
		}
		// The key after the last published one appears one period later.
		if !last.IsZero() && period > 0 {
			published := last.Add(period).Add(-publishAhead)
			consider(published)
			consider(published.Add(nextGrace))
		}
	}
	for _, r := range rep.Retired {
		consider(r.RetiredAt.Add(c.cfg.Grace))
		if w := rep.Window; w != nil {
			consider(r.RetiredAt.Add(c.maxSwitchLag(time.Duration(w.RotationPeriod)*time.Second, time.Duration(w.PublishAhead)*time.Second)))
		}
		if r.Reason == "removed" {
			consider(r.RetiredAt.Add(c.cfg.Grace + c.cfg.MaxReadTTL + goClientMaxDelay + agentReadTime + c.cfg.ReloadAllowance))
		}
	}
	return next
}
