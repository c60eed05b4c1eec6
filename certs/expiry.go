package certs

import (
	"context"
	"log/slog"
	"time"
)

// ExpiryWarningMax is the longest warning before the signing CA expires.
const ExpiryWarningMax = 30 * 24 * time.Hour

// ExpiryWarning is how long before its NotAfter a signing CA valid from
// notBefore is reported as expiring: 30 days, or a quarter of its life if
// that is shorter (a 7-day intermediate would otherwise warn all its life,
// and a warning always on is a warning nobody reads).
func ExpiryWarning(notBefore, notAfter time.Time) time.Duration {
	return min(ExpiryWarningMax, notAfter.Sub(notBefore)/4)
}

// WatchExpiry logs a warning while the signing CA is within ExpiryWarning
// of its end, and an error once it has ended (no SVID can be issued then,
// and the site's proxies lose their identities as their SVIDs run out). It
// checks at start and then at least hourly, reminds daily (hourly in the
// last day), and returns when ctx ends.
func (ca *CA) WatchExpiry(ctx context.Context, log *slog.Logger) {
	var last time.Time
	for {
		var next time.Duration
		last, next = ca.checkExpiry(log, last)
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// checkExpiry logs about the signing CA's expiry if due, given when it
// last did (zero: never), and says when to check again.
func (ca *CA) checkExpiry(log *slog.Logger, last time.Time) (logged time.Time, next time.Duration) {
	ca.mu.RLock()
	cert, intermediate := ca.cert, len(ca.chain) > 0
	ca.mu.RUnlock()
	now := ca.now()
	window := ExpiryWarning(cert.NotBefore, cert.NotAfter)
	left := cert.NotAfter.Sub(now)
	// Check often enough to see the window open even for a short-lived
	// intermediate (a 2-hour one warns in its last 30 minutes).
	next = min(time.Hour, max(time.Minute, window/4))
	remind := 24 * time.Hour
	if left < 24*time.Hour {
		remind = time.Hour
	}
	if left > window || (!last.IsZero() && now.Sub(last) < remind) {
		return last, next
	}
	var what string
	switch {
	case ca.store != nil:
		what = "rotate it (POST /ca/rotate on the admin API)"
	case intermediate:
		what = "have the hub make a new one (medmesh ca intermediate) and restart the control plane with it"
	default:
		what = "renew it in the hospital PKI and restart the control plane with it"
	}
	attrs := []any{"signer", cert.Subject.String(), "notAfter", cert.NotAfter.UTC().Format(time.RFC3339), "site", ca.site}
	if left <= 0 {
		log.Error("the CA certificate that signs SVIDs has EXPIRED: no SVID can be issued or renewed; "+what, attrs...)
	} else {
		log.Warn("the CA certificate that signs SVIDs expires soon: "+what,
			append(attrs, "left", left.Truncate(time.Minute).String())...)
	}
	return now, next
}
