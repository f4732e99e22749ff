package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// Login keeps a Vault login alive for an api.Client: it renews the token
// with api.LifetimeWatcher and logs in again when the watcher ends (maximum
// TTL reached, renewal refused). Create it with KeepLogin.
type Login struct {
	client *api.Client
	method api.AuthMethod
	o      options
	log    *slog.Logger

	mu     sync.Mutex
	logins uint64
	last   time.Time
	err    error

	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// KeepLogin logs c in with method (for example approle.NewAppRoleAuth or
// kubernetes.NewKubernetesAuth from vault/api/auth; Auth().Login sets the
// token on c) and returns once that first login succeeded, retrying with
// backoff until ctx ends. Then, until Close, it keeps the token renewed and
// logs in again whenever renewal ends, retrying failures with capped
// exponential backoff and jitter. Options used: WithLogger, WithRetryBackoff.
//
// Use it before NewSource with the same client; the Source always reads with
// the client's current token.
func KeepLogin(ctx context.Context, c *api.Client, method api.AuthMethod, opts ...Option) (*Login, error) {
	if c == nil {
		return nil, errors.New("ticketkeys: KeepLogin: client: required, got nil")
	}
	if method == nil {
		return nil, errors.New("ticketkeys: KeepLogin: method: required, got nil")
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	l := &Login{client: c, method: method, o: o, log: o.logger.With(slog.String("component", "ticketkeys-login")), done: make(chan struct{})}
	secret, err := l.loginUntil(ctx)
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.loop(loopCtx, secret)
	return l, nil
}

// loginUntil logs in, retrying with backoff until it succeeds or ctx ends.
func (l *Login) loginUntil(ctx context.Context) (*api.Secret, error) {
	src := &Source{o: l.o}
	var lastErr error
	for attempt := 1; ; attempt++ {
		secret, err := l.client.Auth().Login(ctx, l.method)
		if err == nil && (secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "") {
			err = errors.New("login response has no auth.client_token")
		}
		if err == nil {
			l.mu.Lock()
			l.logins++
			l.last = time.Now()
			l.err = nil
			l.mu.Unlock()
			l.log.Info("logged in to Vault", slog.Int("lease_seconds", secret.Auth.LeaseDuration), slog.Bool("renewable", secret.Auth.Renewable))
			return secret, nil
		}
		lastErr = err
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		wait := src.backoff(attempt)
		l.log.Error("Vault login failed; retrying", slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("ticketkeys: KeepLogin: no successful login before the context ended (%v); last error: %w", ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

func (l *Login) loop(ctx context.Context, secret *api.Secret) {
	defer close(l.done)
	for {
		if secret.Auth.LeaseDuration <= 0 {
			// A token without a TTL never needs renewal or a new login.
			<-ctx.Done()
			return
		}
		w, err := l.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			l.log.Error("cannot watch the Vault token; logging in again", slog.String("error", err.Error()))
		} else {
			started := time.Now()
			go w.Start()
			l.watch(ctx, w)
			w.Stop()
			if ctx.Err() != nil {
				return
			}
			// Guard against a watcher that ends at once (for example a very
			// short TTL): never log in more often than the backoff minimum.
			if el := time.Since(started); el < l.o.backoffMin {
				t := time.NewTimer(l.o.backoffMin - el)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
		secret, err = l.loginUntil(ctx)
		if err != nil {
			return // ctx ended
		}
	}
}

// watch waits until the watcher ends or ctx ends.
func (l *Login) watch(ctx context.Context, w *api.LifetimeWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				l.log.Warn("Vault token renewal ended with an error; logging in again", slog.String("error", err.Error()))
			} else {
				l.log.Info("Vault token reached the end of its renewable life; logging in again")
			}
			return
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				l.log.Debug("Vault token renewed", slog.Int("lease_seconds", r.Secret.Auth.LeaseDuration))
			}
		}
	}
}

// Logins returns how many logins succeeded so far, and when the last one did.
func (l *Login) Logins() (count uint64, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logins, l.last
}

// Close stops renewal and re-login (the token is not revoked). It is
// idempotent and returns nil.
func (l *Login) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		<-l.done
	})
	return nil
}
