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
// TTL reached, renewal refused), or when a Source reading through the same
// client is refused the keyring (HTTP 403: the token was revoked). Create it
// with KeepLogin.
type Login struct {
	client *api.Client
	method api.AuthMethod
	o      options
	log    *slog.Logger

	mu     sync.Mutex
	logins uint64
	last   time.Time
	err    error
	// Logins asked for by Sources after a 403 (see reloginAfterDenied):
	// the last one, when the next may be, and the gap after that one.
	deniedLast time.Time
	deniedNext time.Time
	deniedGap  time.Duration

	relogin chan chan error // a Source asks the loop for a login now

	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// Bounds of the gap between two logins asked for after a refused read: a
// revoked token is replaced at the first 403, and a login that does not help
// (the role's policy lacks the keyring) is not repeated at every read: the
// gap doubles from reloginMinGap to reloginMaxGap, and starts again from
// reloginMinGap after twice reloginMaxGap without such a login.
const (
	reloginMinGap = 30 * time.Second
	reloginMaxGap = 10 * time.Minute
)

// loginsByClient maps each api.Client that a KeepLogin keeps logged in to
// its Login, so that a Source reading through that client can ask it to log
// in again when the token is refused. Entries leave at Login.Close.
var loginsByClient sync.Map // *api.Client -> *Login

// loginFor returns the running Login of c, or nil.
func loginFor(c *api.Client) *Login {
	if v, ok := loginsByClient.Load(c); ok {
		return v.(*Login)
	}
	return nil
}

// KeepLogin logs c in with method (for example approle.NewAppRoleAuth or
// kubernetes.NewKubernetesAuth from vault/api/auth; Auth().Login sets the
// token on c) and returns once that first login succeeded, retrying with
// backoff until ctx ends. Then, until Close, it keeps the token renewed and
// logs in again whenever renewal ends, retrying failures with capped
// exponential backoff and jitter. Options used: WithLogger, WithRetryBackoff.
//
// Use it before NewSource with the same client; the Source always reads with
// the client's current token. A Source whose read of the keyring is refused
// (HTTP 403, for example because the token was revoked while the login's
// credentials stay valid) has the Login of its client log in again at once
// and reads again, before it gives up the read: at most once per 30s, the
// gap doubling up to 10m while new logins do not help (the role's policy
// lacks the keyring), so a refused read never turns into a login loop.
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
	l := &Login{client: c, method: method, o: o, log: o.logger.With(slog.String("component", "ticketkeys-login")),
		relogin: make(chan chan error), done: make(chan struct{})}
	secret, err := l.loginUntil(ctx)
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.loop(loopCtx, secret)
	loginsByClient.Store(c, l)
	return l, nil
}

// reloginAfterDenied is called by a Source whose read was refused (HTTP 403)
// with the client's token. Unless a login asked for this way happened less
// than the current gap ago, it has the loop log in once now and reports
// whether that login succeeded (the client then carries a new token). It
// never waits past ctx.
func (l *Login) reloginAfterDenied(ctx context.Context) bool {
	now := l.o.clock.Now()
	l.mu.Lock()
	if now.Before(l.deniedNext) {
		l.mu.Unlock()
		return false
	}
	if l.deniedGap == 0 || now.Sub(l.deniedLast) > 2*reloginMaxGap {
		l.deniedGap = reloginMinGap
	}
	l.deniedLast, l.deniedNext = now, now.Add(l.deniedGap)
	gap := l.deniedGap
	l.deniedGap = min(2*l.deniedGap, reloginMaxGap)
	l.mu.Unlock()
	l.log.Warn("a keyring read was refused with the current token (HTTP 403; revoked?): logging in again",
		slog.Duration("next_possible_in", gap))
	reply := make(chan error, 1)
	select {
	case l.relogin <- reply:
	case <-ctx.Done():
		return false
	case <-l.done:
		return false
	}
	select {
	case err := <-reply:
		return err == nil
	case <-ctx.Done():
		return false
	case <-l.done:
		return false
	}
}

// errLoginRetrying answers a Source's request while the loop is already
// retrying a failed login.
var errLoginRetrying = errors.New("a login is already being retried")

// loginOnce logs in once (Auth().Login sets the new token on the client).
func (l *Login) loginOnce(ctx context.Context) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, l.o.fetchTimeout)
	defer cancel()
	secret, err := l.client.Auth().Login(ctx, l.method)
	if err == nil && (secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "") {
		err = errors.New("login response has no auth.client_token")
	}
	l.mu.Lock()
	l.err = err
	if err == nil {
		l.logins++
		l.last = time.Now()
	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	l.log.Info("logged in to Vault", slog.Int("lease_seconds", secret.Auth.LeaseDuration), slog.Bool("renewable", secret.Auth.Renewable))
	return secret, nil
}

// loginUntil logs in, retrying with backoff until it succeeds or ctx ends.
func (l *Login) loginUntil(ctx context.Context) (*api.Secret, error) {
	src := &Source{o: l.o}
	var lastErr error
	for attempt := 1; ; attempt++ {
		secret, err := l.loginOnce(ctx)
		if err == nil {
			return secret, nil
		}
		lastErr = err
		wait := src.backoff(attempt)
		l.log.Error("Vault login failed; retrying", slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
	sleeping:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("ticketkeys: KeepLogin: no successful login before the context ended (%v); last error: %w", ctx.Err(), lastErr)
			case reply := <-l.relogin:
				reply <- errLoginRetrying
			case <-t.C:
				break sleeping
			}
		}
	}
}

// reloginNow serves a Source's request: one login now. On success the loop
// goes on with the new secret; on failure with the old one (still valid if
// the 403 had another cause), and the Source retries later.
func (l *Login) reloginNow(ctx context.Context, old *api.Secret, reply chan error) *api.Secret {
	secret, err := l.loginOnce(ctx)
	reply <- err
	if err != nil {
		l.log.Error("logging in again after a refused keyring read failed; keeping the current token", slog.String("error", err.Error()))
		return old
	}
	return secret
}

func (l *Login) loop(ctx context.Context, secret *api.Secret) {
	defer close(l.done)
	for {
		if secret.Auth.LeaseDuration <= 0 {
			// A token without a TTL never needs renewal or a new login,
			// unless a Source finds it refused.
			select {
			case <-ctx.Done():
				return
			case reply := <-l.relogin:
				secret = l.reloginNow(ctx, secret, reply)
				continue
			}
		}
		w, err := l.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			l.log.Error("cannot watch the Vault token; logging in again", slog.String("error", err.Error()))
		} else {
			started := time.Now()
			go w.Start()
			reply := l.watch(ctx, w)
			w.Stop()
			if ctx.Err() != nil {
				return
			}
			if reply != nil {
				secret = l.reloginNow(ctx, secret, reply)
				continue
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

// watch waits until the watcher ends, ctx ends, or a Source asks for a
// login now (then it returns the request's reply channel).
func (l *Login) watch(ctx context.Context, w *api.LifetimeWatcher) chan error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case reply := <-l.relogin:
			return reply
		case err := <-w.DoneCh():
			if err != nil {
				l.log.Warn("Vault token renewal ended with an error; logging in again", slog.String("error", err.Error()))
			} else {
				l.log.Info("Vault token reached the end of its renewable life; logging in again")
			}
			return nil
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
		loginsByClient.CompareAndDelete(l.client, l)
		l.cancel()
		<-l.done
	})
	return nil
}
