package ir

import (
	"slices"
	"time"
)

// Defaults are the traffic settings every service gets until a policy says
// otherwise. They are chosen for clinical traffic and documented in
// docs/defaults.md; change both together.
type Defaults struct {
	ConnectTimeout time.Duration
	// RequestTimeout applies to HTTP and gRPC requests; ImagingTimeout to
	// imaging services, whose studies can be gigabytes.
	RequestTimeout time.Duration
	ImagingTimeout time.Duration
	// StreamIdleTimeout ends idle long-lived streams (vitals, signalling).
	StreamIdleTimeout time.Duration
	RetryAttempts     uint32
	PerTryTimeout     time.Duration
	ImagingPerTry     time.Duration
	CircuitBreaker    CircuitBreaker
	Outlier           Outlier
}

// DefaultDefaults returns medmesh's documented defaults.
func DefaultDefaults() Defaults {
	return Defaults{
		// Fail over to another instance quickly rather than hang a clinician.
		ConnectTimeout:    2 * time.Second,
		RequestTimeout:    15 * time.Second,
		ImagingTimeout:    300 * time.Second,
		StreamIdleTimeout: 5 * time.Minute,
		RetryAttempts:     2,
		PerTryTimeout:     5 * time.Second,
		ImagingPerTry:     120 * time.Second,
		CircuitBreaker: CircuitBreaker{
			MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024,
			RetryBudgetPercent: 20, MinRetryConcurrency: 3,
		},
		Outlier: Outlier{
			// Envoy sidecars: 5 consecutive 5xx, or 3 consecutive gateway
			// failures (502, 503, 504: the instance did not answer).
			Consecutive5xx: 5, ConsecutiveGatewayFailure: 3,
			// Proxyless gRPC: an instance failing more than 80 % of at
			// least 10 calls in an interval, once 2 instances had that
			// many. gRPC counts every non-OK status as a failure (a
			// NOT_FOUND lookup too), so the threshold is high enough that
			// only a broken instance crosses it; 10 calls and 2 instances
			// fit a clinic's handful of instances, where gRPC's defaults
			// (50 calls, 5 instances) would never eject anything.
			FailurePercentageThreshold: 80, FailurePercentageMinimumHosts: 2, FailurePercentageRequestVolume: 10,
			Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
			// Never eject more than half of a clinical service: degraded
			// capacity beats no capacity.
			MaxEjectionPercent: 50,
		},
	}
}

// httpRetryOn: 5xx and resets are retried only for idempotent methods
// (IdempotentOnly); 429 is retried because a throttled instance says
// nothing about its peers.
var httpRetryOn = []string{"5xx", "reset", "connect-failure", "retriable-status-codes"}

// grpcRetryOn lists the conditions grpc-go also understands. UNAVAILABLE
// means the server did not start processing the call, so a retry is safe
// even for non-idempotent methods; connect failures and refused streams
// never reached the application.
var grpcRetryOn = []string{"unavailable", "connect-failure", "refused-stream"}

func (d Defaults) route(kind Kind, protocol Protocol) Route {
	r := Route{
		Timeout:     d.RequestTimeout,
		IdleTimeout: d.StreamIdleTimeout,
		Retry: Retry{
			Attempts: d.RetryAttempts, PerTryTimeout: d.PerTryTimeout,
			BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond,
		},
	}
	switch kind {
	case KindImaging:
		r.Timeout, r.Retry.PerTryTimeout = d.ImagingTimeout, d.ImagingPerTry
	case KindVitals, KindWebRTC:
		// Vitals streams and signalling are long-lived (WebSockets over
		// HTTP, streams over gRPC): a whole-request timeout would cut a
		// monitor off mid-shift. The stream idle timeout still frees
		// what dead callers hold.
		r.Timeout = 0
		r.WebSocket = protocol == ProtocolHTTP
	}
	if protocol == ProtocolGRPC {
		r.Retry.RetryOn = slices.Clone(grpcRetryOn)
	} else {
		r.Retry.RetryOn = slices.Clone(httpRetryOn)
		r.Retry.RetriableStatusCodes = []uint32{429}
		r.Retry.IdempotentOnly = true
	}
	return r
}
