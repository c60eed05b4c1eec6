package sched

import (
	"testing"

	"medmesh/api/wire"
)

// The control plane sizes Envoy's ext_proc message timeout and circuit
// breaker from wire's copy of these limits; they must stay equal.
func TestDefaultsMatchWireContract(t *testing.T) {
	if got := LongestWait(Config{}); got != wire.SchedulerLongestWait {
		t.Errorf("LongestWait(defaults) = %v, wire.SchedulerLongestWait = %v", got, wire.SchedulerLongestWait)
	}
	if got := MaxOutstanding(Config{}); got != wire.SchedulerMaxOutstanding {
		t.Errorf("MaxOutstanding(defaults) = %d, wire.SchedulerMaxOutstanding = %d", got, wire.SchedulerMaxOutstanding)
	}
}
